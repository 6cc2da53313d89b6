"""The interface every budget policy implements, and the messages it exchanges.

A policy is a pure state machine. The scheduler (``raysplit.runtime.coordinator``) asks it
what each client does next (:meth:`BudgetPolicy.decide` returns a :class:`Directive`, or
:data:`WAIT` at a barrier) and tells it what each client did (:meth:`BudgetPolicy.observe`
with an :class:`Observation`: progress, measured step time, bytes, loss, accuracy). It
answers with :class:`Event` objects (transitions, completed barriers) that the scheduler
acts on. Nothing outside the policy knows its name or its rules: the sync policy's
epoch barrier and the async policy's free running are both just answers to ``decide``.

A client's work comes as a sequence of directives:

* ``train``: steps ``[start, stop)`` of an epoch's batches at a budget and learning rate
  (an epoch may be cut into segments so that replicas can sync between them);
* ``aggregate``: hand in the head for averaging (SplitFed), then wait for the average;
* ``evaluate``: score the test share (after loading the averaged head, if any);
* ``done``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

TRAIN = "train"
AGGREGATE = "aggregate"
EVALUATE = "evaluate"
DONE = "done"
KINDS = (TRAIN, AGGREGATE, EVALUATE, DONE)


class Wait:
    """The answer to ``decide`` while a client must wait for the others (a barrier)."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT = Wait()


@dataclass(frozen=True)
class Directive:
    """What one client does next.

    Args:
        kind: train | aggregate | evaluate | done.
        epoch: the global epoch this belongs to (-1 for done).
        phase: index of the plan's phase (budget level).
        budget: channels to send, B.
        lr: learning rate of the client and of the shard's step.
        steps: (start, stop) batch indices of the epoch to train (train only).
        enter_phase: the first train directive of a phase: apply its stage and filter reset.
        last_of_epoch: this train segment ends the client's epoch.
        seq: the n-th directive this client received (set by the scheduler).
        collect: states the report after an evaluate must carry: "model" (the trained
            modules, to save) and/or "checkpoint" (everything, to resume from).
        load_state: averaged module state to load before evaluating (SplitFed).
        resume_at: the emulated time the client resumes at after a barrier (the latest of the
            clocks of the clients that met there); None without a barrier or a link.
    """

    kind: str
    epoch: int = -1
    phase: int = 0
    budget: int = 0
    lr: float = 0.0
    steps: tuple[int, int] = (0, 0)
    enter_phase: bool = False
    last_of_epoch: bool = False
    seq: int = 0
    collect: tuple[str, ...] = ()
    load_state: Any = None
    resume_at: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown directive kind {self.kind!r}; allowed: {', '.join(KINDS)}")


DONE_DIRECTIVE = Directive(DONE)


@dataclass(frozen=True)
class Observation:
    """What a client reports after a directive.

    Args:
        client: the client.
        kind: the kind of directive it completed.
        epoch: that directive's epoch.
        steps: training steps done (train).
        samples: samples trained on (train).
        seconds: wall time of the directive's work.
        step_seconds: median step latency (train).
        bytes_up, bytes_down: bytes that crossed (train and evaluate).
        loss: mean task loss over its samples (train).
        correct, total: test predictions right / made (evaluate).
        sim_time: the client's emulated clock when it reported (NaN without a link).
        sim_seconds: emulated seconds of the directive's steps (train).
        compute_s, uplink_s, downlink_s, latency_s: of which client compute, uplink, downlink, and
            the propagation / retransmission-feedback part of the transfers (train; see LinkTiming).
        wire_bytes_up, wire_bytes_down: bytes on the emulated wire (train).
    """

    client: int
    kind: str
    epoch: int
    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    step_seconds: float = math.nan
    bytes_up: int = 0
    bytes_down: int = 0
    loss: float = math.nan
    correct: int = 0
    total: int = 0
    sim_time: float = math.nan
    sim_seconds: float = 0.0
    compute_s: float = 0.0
    uplink_s: float = 0.0
    downlink_s: float = 0.0
    latency_s: float = 0.0
    wire_bytes_up: int = 0
    wire_bytes_down: int = 0


@dataclass(frozen=True)
class Transition:
    """A budget change: every client at once (client None) or one client."""

    epoch: int
    from_budget: int
    to_budget: int
    lr: float
    client: int | None


@dataclass(frozen=True)
class Barrier:
    """Every live client completed the same directive (kind, epoch, segment)."""

    kind: str
    epoch: int
    segment: int
    clients: tuple[int, ...]


@dataclass(frozen=True)
class Round:
    """The clients that take part in an epoch (participant selection,
    ``raysplit.budget.selection``); emitted only when not every live client does."""

    epoch: int
    clients: tuple[int, ...]


@dataclass(frozen=True)
class Finished:
    """The last live client got its final directive: the run is over."""

    clients: tuple[int, ...] = field(default=())


Event = Transition | Barrier | Round | Finished


@runtime_checkable
class BudgetPolicy(Protocol):
    """What the scheduler needs from a policy. Construction takes the plan, the client
    ids, each client's steps per epoch, the segment length and whether heads are
    averaged (see ``raysplit.budget.policies.make_policy``)."""

    def decide(self, client: int) -> Directive | Wait:
        """The next directive for ``client`` (without ``seq``), or WAIT."""
        ...

    def observe(self, obs: Observation) -> list[Event]:
        """Record what a client did; return what that caused."""
        ...

    def drop(self, client: int) -> list[Event]:
        """A client failed: it no longer holds any barrier."""
        ...

    def progress(self) -> dict[int, int]:
        """Epochs each live client has completed."""
        ...

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


def segments(steps: int, every: int) -> list[tuple[int, int]]:
    """Batch ranges of one epoch cut every ``every`` steps (0 = one segment)."""
    if steps <= 0:
        return [(0, 0)]
    if every <= 0:
        return [(0, steps)]
    return [(a, min(a + every, steps)) for a in range(0, steps, every)]
