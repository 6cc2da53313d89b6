"""All clients move through the schedule together.

Every directive is a barrier: a client that finished a training segment, the
aggregation or the evaluation of an epoch waits until every live client has finished it
too. So replicas can be synced between segments, heads averaged after training, and an
epoch's evaluation sees a tail that no client has moved on from; budgets change for
everyone at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raysplit.budget.policies.base import (
    AGGREGATE,
    EVALUATE,
    TRAIN,
    WAIT,
    Barrier,
    Directive,
    Event,
    Observation,
    Round,
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
    selection: who takes part in each epoch (``raysplit.budget.selection.Selection``): only
        they train, aggregate and evaluate it, the barriers wait for them alone, and the
        others WAIT until a round selects them (or the run ends). None = every live client.
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
    selection: Any = None
    round: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.steps_per_epoch:
            raise ValueError("a policy needs at least one client")
        self.live = set(self.steps_per_epoch)
        self.segs = segments(max(self.steps_per_epoch.values()), self.segment_steps)
        self._unsent: list[Event] = []  # the first round's event, handed out with the first answer
        self.round = set(self.live)
        self._unsent = self._start_round()

    def _start_round(self) -> list[Event]:
        """Select the epoch's participants; skip epochs in which nobody is available."""
        events: list[Event] = []
        while self.selection is not None and self.epoch < self.plan.total_epochs:
            self.round = set(self.selection.participants(self.epoch, self.live))
            events.append(Round(self.epoch, tuple(sorted(self.round))))
            if self.round or not self.live:
                break
            events += self._next_epoch()
        if self.selection is None:
            self.round = set(self.live)
        return events

    def _next_epoch(self) -> list[Event]:
        self.stage, self.segment, self.epoch = TRAIN, 0, self.epoch + 1
        if self.epoch < self.plan.total_epochs and self.plan.schedule.is_transition(self.epoch):
            p = self.plan.phase_at(self.epoch)
            prev = self.plan.phases[p.index - 1].budget
            return [Transition(self.epoch, prev, p.budget, self.plan.lr_at(self.epoch), None)]
        return []

    # -- questions ----------------------------------------------------------------
    def decide(self, client: int) -> Directive | Wait:
        if client not in self.steps_per_epoch:
            raise KeyError(f"client {client} is not part of this run")
        if self.epoch >= self.plan.total_epochs:
            return DONE_DIRECTIVE
        if client not in self.live:
            return DONE_DIRECTIVE
        if client in self.done or client not in self.round:
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
        if (obs.kind, obs.epoch) != (self.stage, self.epoch) or c in self.done or c not in self.round:
            why = (" and it already reported it" if c in self.done
                   else " and it does not take part in this epoch" if c not in self.round else "")
            raise ValueError(
                f"client {c} reported {obs.kind} of epoch {obs.epoch}, but the run is at {self.stage} of epoch "
                f"{self.epoch}{why}"
            )
        self.done.add(c)
        return self._unsent_then(self._maybe_advance())

    def drop(self, client: int) -> list[Event]:
        self.live.discard(client)
        self.done.discard(client)
        return self._unsent_then(self._maybe_advance() if self.done or not (self.live & self.round) else [])

    def _unsent_then(self, events: list[Event]) -> list[Event]:
        first, self._unsent = self._unsent, []
        return first + events

    def _maybe_advance(self) -> list[Event]:
        # Several barriers pass at once only when a round has nobody left (its
        # participants failed): then nobody would report to pass them.
        events: list[Event] = []
        while self.live and self.epoch < self.plan.total_epochs and self.done >= (active := self.live & self.round):
            events.append(Barrier(self.stage, self.epoch, self.segment, tuple(sorted(active))))
            self.done = set()
            if self.stage == TRAIN and self.segment + 1 < len(self.segs):
                self.segment += 1
            elif self.stage == TRAIN:
                self.stage, self.segment = (AGGREGATE if self.aggregate else EVALUATE), 0
            elif self.stage == AGGREGATE:
                self.stage = EVALUATE
            else:
                events += self._next_epoch()
                events += self._start_round()
        return events

    # -- state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "stage": self.stage, "segment": self.segment,
                "live": sorted(self.live), "done": sorted(self.done), "round": sorted(self.round)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.stage, self.segment = int(state["epoch"]), str(state["stage"]), int(state["segment"])
        self.live, self.done = set(state["live"]), set(state["done"])
        self.round = set(state.get("round", self.live))
