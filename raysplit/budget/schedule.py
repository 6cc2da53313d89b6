"""Budget schedules and selectLr: pure functions of the epoch number.

A schedule is a list of budgets, each trained for some epochs. Deprune goes up
(e.g. 4 -> 128), prune goes down (128 -> 32 -> 4), fixed is one budget (which order a
method allows is ``raysplit.training.methods``'s business). selectLr: for every
non-initial budget, the learning rate is multiplied by γ for the first l_k epochs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    """One budget level of a schedule.

    Args:
        index: position of this budget in the schedule (0 = initial).
        budget: channels sent, B.
        first_epoch: global epoch number this phase starts at.
        epochs: how many epochs it lasts.
    """

    index: int
    budget: int
    first_epoch: int
    epochs: int


@dataclass(frozen=True)
class Schedule:
    """A budget schedule with selectLr.

    Args:
        budgets: budget per phase (channels sent); any order.
        epochs: epochs per phase, same length as budgets.
        lr: base learning rate.
        gamma: selectLr factor applied for the first ``lk`` epochs of every non-initial phase.
        lk: epochs of boosted learning rate after a transition (0 disables selectLr).
    """

    budgets: tuple[int, ...]
    epochs: tuple[int, ...]
    lr: float
    gamma: float = 1.0
    lk: int = 0

    def __post_init__(self) -> None:
        if not self.budgets:
            raise ValueError("budgets must not be empty")
        if len(self.epochs) != len(self.budgets):
            raise ValueError(
                f"epochs per budget {list(self.epochs)} must have one entry per budget {list(self.budgets)} "
                "(or be a single number)"
            )
        for b in self.budgets:
            if int(b) != b or b < 1:
                raise ValueError(f"budget {b!r} invalid: budgets are integers >= 1")
        for e in self.epochs:
            if int(e) != e or e < 1:
                raise ValueError(f"epochs {e!r} invalid: epochs per budget are integers >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if self.lk < 0:
            raise ValueError(f"lk must be >= 0, got {self.lk}")

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs)

    def phases(self) -> list[Phase]:
        out, start = [], 0
        for i, (b, e) in enumerate(zip(self.budgets, self.epochs)):
            out.append(Phase(i, int(b), start, int(e)))
            start += int(e)
        return out

    def phase_at(self, epoch: int) -> Phase:
        if not 0 <= epoch < self.total_epochs:
            raise ValueError(f"epoch {epoch} outside the schedule: allowed 0..{self.total_epochs - 1}")
        for p in self.phases():
            if epoch < p.first_epoch + p.epochs:
                return p
        raise AssertionError("unreachable")

    def budget_at(self, epoch: int) -> int:
        return self.phase_at(epoch).budget

    def lr_at(self, epoch: int) -> float:
        """selectLr(l_k, γ): γ·lr for the first l_k epochs of each non-initial phase."""
        p = self.phase_at(epoch)
        if p.index > 0 and epoch - p.first_epoch < self.lk:
            return self.lr * self.gamma
        return self.lr

    def is_transition(self, epoch: int) -> bool:
        """True when ``epoch`` starts a new, non-initial phase."""
        p = self.phase_at(epoch)
        return p.index > 0 and epoch == p.first_epoch


def broadcast_epochs(epochs: list[int] | tuple[int, ...], n_budgets: int) -> tuple[int, ...]:
    """One number means 'this many epochs for every budget'."""
    if len(epochs) == 1:
        return tuple(epochs) * n_budgets
    return tuple(epochs)
