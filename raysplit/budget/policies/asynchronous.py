"""Each client walks the schedule at its own pace: no barriers, budgets change per client."""

from __future__ import annotations

from dataclasses import dataclass, field

from raysplit.budget.policies.base import (
    DONE_DIRECTIVE,
    EVALUATE,
    TRAIN,
    Directive,
    Event,
    Observation,
    Transition,
    Wait,
    segments,
)
from raysplit.training.methods import Plan


@dataclass
class AsyncPolicy:
    """Args:
    plan: the run's plan.
    steps_per_epoch: {client: batches per epoch}.
    segment_steps: cut each epoch every this many steps (0 = one segment); segments
        only split the work here, nobody waits between them.
    aggregate: must be False (averaging heads needs common epoch ends).
    """

    plan: Plan
    steps_per_epoch: dict[int, int]
    segment_steps: int = 0
    aggregate: bool = False
    position: dict[int, tuple[int, str, int]] = field(default_factory=dict)  # client -> (epoch, stage, segment)

    def __post_init__(self) -> None:
        if self.aggregate:
            raise ValueError("the async policy cannot average heads: that needs common epoch ends (policy 'sync')")
        if not self.steps_per_epoch:
            raise ValueError("a policy needs at least one client")
        self.position = {c: (0, TRAIN, 0) for c in self.steps_per_epoch}

    def _segs(self, client: int) -> list[tuple[int, int]]:
        return segments(self.steps_per_epoch[client], self.segment_steps)

    def decide(self, client: int) -> Directive | Wait:
        if client not in self.steps_per_epoch:
            raise KeyError(f"client {client} is not part of this run")
        if client not in self.position:
            return DONE_DIRECTIVE
        epoch, stage, seg = self.position[client]
        if epoch >= self.plan.total_epochs:
            return DONE_DIRECTIVE
        phase = self.plan.phase_at(epoch)
        base = dict(epoch=epoch, phase=phase.index, budget=phase.budget, lr=self.plan.lr_at(epoch))
        if stage == TRAIN:
            segs = self._segs(client)
            return Directive(TRAIN, steps=segs[seg], enter_phase=seg == 0 and epoch == phase.first_epoch,
                             last_of_epoch=seg == len(segs) - 1, **base)
        return Directive(EVALUATE, **base)

    def observe(self, obs: Observation) -> list[Event]:
        c = obs.client
        if c not in self.position:
            raise ValueError(f"client {c} reported but is not live (dropped or unknown)")
        epoch, stage, seg = self.position[c]
        if (obs.kind, obs.epoch) != (stage, epoch):
            raise ValueError(f"client {c} reported {obs.kind} of epoch {obs.epoch}, but it is at {stage} of epoch {epoch}")
        if stage == TRAIN and seg + 1 < len(self._segs(c)):
            self.position[c] = (epoch, TRAIN, seg + 1)
        elif stage == TRAIN:
            self.position[c] = (epoch, EVALUATE, 0)
        else:
            epoch += 1
            self.position[c] = (epoch, TRAIN, 0)
            if epoch < self.plan.total_epochs and self.plan.schedule.is_transition(epoch):
                p = self.plan.phase_at(epoch)
                return [Transition(epoch, self.plan.phases[p.index - 1].budget, p.budget, self.plan.lr_at(epoch), c)]
        return []

    def drop(self, client: int) -> list[Event]:
        self.position.pop(client, None)
        return []

    def progress(self) -> dict[int, int]:
        return {c: e for c, (e, _, _) in sorted(self.position.items())}

    def state_dict(self) -> dict:
        return {"position": {c: list(p) for c, p in self.position.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.position = {int(c): (int(p[0]), str(p[1]), int(p[2])) for c, p in state["position"].items()}
