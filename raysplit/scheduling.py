"""Budget scheduling policies: pure state machines the scheduler actor holds.

A policy answers "what should client c do next?" with an :class:`Assignment` (epoch,
budget, learning rate, whether a transition happened and which filter reset applies) and
learns when a client finished an epoch. New policies (adaptive budgets from a link
model, per-tenant schedules) implement the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raysplit.budget.schedule import Schedule

POLICIES = ("sync", "async")


@dataclass(frozen=True)
class Assignment:
    """Args:
    epoch: global epoch number the client trains now (None: the schedule is finished).
    budget, lr: what to train it with.
    transition: True on the first epoch of a non-initial phase.
    previous_budget: the budget left at a transition (for the filter reset).
    """

    epoch: int | None
    budget: int = 0
    lr: float = 0.0
    transition: bool = False
    previous_budget: int | None = None


@dataclass
class Transition:
    epoch: int
    from_budget: int
    to_budget: int
    lr: float
    client: int | None  # None: every client at once (sync policy)


def _assignment(s: Schedule, epoch: int) -> Assignment:
    if epoch >= s.total_epochs:
        return Assignment(None)
    p = s.phase_at(epoch)
    trans = s.is_transition(epoch)
    return Assignment(epoch, p.budget, s.lr_at(epoch), trans, s.budgets[p.index - 1] if trans else None)


@dataclass
class SyncPolicy:
    """All clients move together: epoch e+1 starts when every live client finished e."""

    schedule: Schedule
    clients: list[int]
    epoch: int = 0
    done: set[int] = field(default_factory=set)
    transitions: list[Transition] = field(default_factory=list)

    def assignment(self, client: int) -> Assignment:
        return _assignment(self.schedule, self.epoch)

    def epoch_done(self, client: int, epoch: int) -> bool:
        """Record it; True when this completed the epoch for everyone (the barrier)."""
        if epoch != self.epoch:
            raise ValueError(f"client {client} reported epoch {epoch} but the cluster is at epoch {self.epoch}")
        self.done.add(client)
        return self._maybe_advance()

    def _maybe_advance(self) -> bool:
        if self.clients and self.done >= set(self.clients):
            self.done = set()
            self.epoch += 1
            a = _assignment(self.schedule, self.epoch)
            if a.transition:
                self.transitions.append(Transition(self.epoch, a.previous_budget, a.budget, a.lr, None))
            return True
        return False

    def drop(self, client: int) -> bool:
        """A failed client no longer holds the barrier; True if that completed it."""
        if client in self.clients:
            self.clients.remove(client)
        self.done.discard(client)
        return bool(self.done) and self._maybe_advance()

    def progress(self) -> dict[int, int]:
        return {c: self.epoch + (1 if c in self.done else 0) for c in self.clients}


@dataclass
class AsyncPolicy:
    """Each client walks the schedule at its own pace (no barrier)."""

    schedule: Schedule
    clients: list[int]
    epochs: dict[int, int] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.epochs = {c: 0 for c in self.clients}

    def assignment(self, client: int) -> Assignment:
        return _assignment(self.schedule, self.epochs[client])

    def epoch_done(self, client: int, epoch: int) -> bool:
        if epoch != self.epochs[client]:
            raise ValueError(f"client {client} reported epoch {epoch}, expected {self.epochs[client]}")
        self.epochs[client] += 1
        a = _assignment(self.schedule, self.epochs[client])
        if a.transition:
            self.transitions.append(Transition(self.epochs[client], a.previous_budget, a.budget, a.lr, client))
        return True

    def drop(self, client: int) -> None:
        if client in self.clients:
            self.clients.remove(client)

    def progress(self) -> dict[int, int]:
        return {c: self.epochs[c] for c in self.clients}


def make_policy(name: str, schedule: Schedule, clients: list[int]):
    if name == "sync":
        return SyncPolicy(schedule, list(clients))
    if name == "async":
        return AsyncPolicy(schedule, list(clients))
    raise ValueError(f"unknown scheduling policy {name!r}; choose one of {POLICIES}")
