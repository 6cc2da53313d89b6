"""All clients move through the schedule together.

Every directive is a barrier: a client that finished a training segment, the
aggregation or the evaluation of an epoch waits until every live client has finished it
too. So replicas can be synced between segments, heads averaged after training, and an
epoch's evaluation sees a tail that no client has moved on from; budgets change for
everyone at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raysplit.budget.policies.base import (
    AGGREGATE,
    EVALUATE,
    TRAIN,
    WAIT,
    Barrier,
    Directive,
    Event,
    Observation,
    Transition,
    Wait,
    segments,
    DONE_DIRECTIVE,
)
from raysplit.training.methods import Plan


@dataclass
class SyncPolicy:
    """Args:
    plan: the run's plan.
    steps_per_epoch: {client: batches per epoch}; the epoch's segments follow the
        longest, and a shorter client gets empty segments so it still meets the barriers.
    segment_steps: cut each epoch every this many steps (0 = one segment).
    aggregate: insert an aggregate directive after each epoch's training (SplitFed).
    """

    plan: Plan
    steps_per_epoch: dict[int, int]
    segment_steps: int = 0
    aggregate: bool = False
    epoch: int = 0
    stage: str = TRAIN
    segment: int = 0
    live: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.steps_per_epoch:
            raise ValueError("a policy needs at least one client")
        self.live = set(self.steps_per_epoch)
        self.segs = segments(max(self.steps_per_epoch.values()), self.segment_steps)

    # -- questions ----------------------------------------------------------------
    def decide(self, client: int) -> Directive | Wait:
        if client not in self.steps_per_epoch:
            raise KeyError(f"client {client} is not part of this run")
        if self.epoch >= self.plan.total_epochs:
            return DONE_DIRECTIVE
        if client not in self.live:
            return DONE_DIRECTIVE
        if client in self.done:
            return WAIT
        phase = self.plan.phase_at(self.epoch)
        base = dict(epoch=self.epoch, phase=phase.index, budget=phase.budget, lr=self.plan.lr_at(self.epoch))
        if self.stage == TRAIN:
            own = self.steps_per_epoch[client]
            a, b = self.segs[self.segment]
            return Directive(
                TRAIN,
                steps=(min(a, own), min(b, own)),
                enter_phase=self.segment == 0 and self.epoch == phase.first_epoch,
                last_of_epoch=self.segment == len(self.segs) - 1,
                **base,
            )
        return Directive(self.stage, **base)

    def progress(self) -> dict[int, int]:
        return {c: self.epoch for c in sorted(self.live)}

    # -- news ---------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[Event]:
        c = obs.client
        if c not in self.live:
            raise ValueError(f"client {c} reported but is not live (dropped or unknown)")
        if (obs.kind, obs.epoch) != (self.stage, self.epoch) or c in self.done:
            raise ValueError(
                f"client {c} reported {obs.kind} of epoch {obs.epoch}, but the run is at {self.stage} of epoch "
                f"{self.epoch}{' and it already reported it' if c in self.done else ''}"
            )
        self.done.add(c)
        return self._maybe_advance()

    def drop(self, client: int) -> list[Event]:
        self.live.discard(client)
        self.done.discard(client)
        return self._maybe_advance() if self.done else []

    def _maybe_advance(self) -> list[Event]:
        if not self.live or not self.done >= self.live:
            return []
        events: list[Event] = [Barrier(self.stage, self.epoch, self.segment, tuple(sorted(self.live)))]
        self.done = set()
        if self.stage == TRAIN and self.segment + 1 < len(self.segs):
            self.segment += 1
        elif self.stage == TRAIN:
            self.stage, self.segment = (AGGREGATE if self.aggregate else EVALUATE), 0
        elif self.stage == AGGREGATE:
            self.stage = EVALUATE
        else:
            self.stage, self.epoch = TRAIN, self.epoch + 1
            if self.epoch < self.plan.total_epochs and self.plan.schedule.is_transition(self.epoch):
                p = self.plan.phase_at(self.epoch)
                prev = self.plan.phases[p.index - 1].budget
                events.append(Transition(self.epoch, prev, p.budget, self.plan.lr_at(self.epoch), None))
        return events

    # -- state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "stage": self.stage, "segment": self.segment,
                "live": sorted(self.live), "done": sorted(self.done)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.stage, self.segment = int(state["epoch"]), str(state["stage"]), int(state["segment"])
        self.live, self.done = set(state["live"]), set(state["done"])
