"""What the controller does when a part of the run fails: a failure policy.

Modelled on Ray Train v2's ``FailurePolicy``: the controller (``runtime/driver.py``) turns
every failure it sees into a :class:`Failure` and asks the policy for a
:class:`FailureDecision`; it acts on the decision and never asks which policy runs.

* ``RESTART``: bring the part back from its last recovery state and let it rejoin the
  schedule (a client: restored and replayed, see ``runtime/recovery.py``; a shard or the
  scheduler: Ray already restarted it, and it reloaded its state itself);
* ``EXCLUDE``: drop the client from the schedule; the others go on (only clients can be
  excluded: a shard or the scheduler is needed by everyone);
* ``RAISE``: stop the run with the error.

Which failures are *retryable*: the death of a process (``SIGKILL``, OOM kill, a crashed
node), seen through Ray as an actor error. An exception raised by a client's own code (a
bad value, a ``NonFiniteError`` under ``--on-nonfinite stop``, the test hook
``--inject-fault``) is not: restarting would raise it again.

Policies are registered in :data:`FAILURE_POLICIES` (``--failure-policy NAME``), built
with :func:`make_failure_policy`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

COMPONENTS = ("client", "shard", "scheduler")


class FailureDecision(enum.Enum):
    RESTART = "restart"
    EXCLUDE = "exclude"
    RAISE = "raise"


RESTART, EXCLUDE, RAISE = FailureDecision.RESTART, FailureDecision.EXCLUDE, FailureDecision.RAISE


@dataclass(frozen=True)
class Failure:
    """One failure, as the policy sees it.

    Args:
        component: "client", "shard" or "scheduler".
        id: which one (client id, shard number; 0 for the scheduler).
        error: one line: the exception's type and message.
        retryable: a process died (restarting can help); False for an exception raised
            by the part's own code.
        count: failures of this component id so far, this one included (1 = first).
    """

    component: str
    id: int
    error: str
    retryable: bool
    count: int

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"unknown component {self.component!r}; allowed: {', '.join(COMPONENTS)}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")

    def __str__(self) -> str:
        return f"{self.component} {self.id} (failure {self.count}): {self.error}"


@runtime_checkable
class FailurePolicy(Protocol):
    """What the controller needs from a policy."""

    max_failures: int

    def make_decision(self, failure: Failure) -> FailureDecision:
        """What to do about ``failure``."""
        ...


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a part whose process died, up to ``max_failures`` times per part; after
    that (or for an error of its own code) exclude a client, and stop the run for a
    shard or the scheduler.

    Args:
        max_failures: restarts allowed per client, shard and scheduler (also Ray's
            ``max_restarts`` of their actors).
    """

    max_failures: int = 3

    def __post_init__(self) -> None:
        _check_max(self.max_failures)

    def make_decision(self, failure: Failure) -> FailureDecision:
        if failure.retryable and failure.count <= self.max_failures:
            return RESTART
        return EXCLUDE if failure.component == "client" else RAISE


@dataclass(frozen=True)
class ExcludePolicy:
    """Never restart: a failed client is excluded at once (the others go on); a failed
    shard or scheduler stops the run. ``max_failures`` is 0 (no actor restarts)."""

    max_failures: int = 0

    def __post_init__(self) -> None:
        if self.max_failures != 0:
            raise ValueError(f"the exclude policy restarts nothing: max_failures must be 0, got {self.max_failures}")

    def make_decision(self, failure: Failure) -> FailureDecision:
        return EXCLUDE if failure.component == "client" else RAISE


@dataclass(frozen=True)
class RaisePolicy:
    """Stop the run at the first failure of anything (fail fast)."""

    max_failures: int = 0

    def __post_init__(self) -> None:
        if self.max_failures != 0:
            raise ValueError(f"the raise policy restarts nothing: max_failures must be 0, got {self.max_failures}")

    def make_decision(self, failure: Failure) -> FailureDecision:
        return RAISE


FAILURE_POLICIES: dict[str, Callable[..., FailurePolicy]] = {
    "restart": RestartPolicy,
    "exclude": ExcludePolicy,
    "raise": RaisePolicy,
}


def make_failure_policy(name: str, max_failures: int) -> FailurePolicy:
    """The policy ``name`` (``FAILURE_POLICIES``); ``max_failures`` applies to "restart"."""
    if name not in FAILURE_POLICIES:
        raise ValueError(f"unknown failure policy {name!r}; choose one of {', '.join(FAILURE_POLICIES)}")
    return FAILURE_POLICIES[name](max_failures) if name == "restart" else FAILURE_POLICIES[name]()


def _check_max(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"max_failures must be an integer >= 0, got {n!r}")


class RunFailed(RuntimeError):
    """The failure policy decided to stop the run (``RAISE``)."""


def describe(error: BaseException) -> tuple[str, bool]:
    """(one line naming the error, whether it is retryable) for an error from ``ray.get``.

    A ``RayTaskError`` carries an exception raised by the task's own code (its ``cause``);
    an actor error without one means the actor's process died or became unreachable.
    Retryable: a process died, this one or one it was calling (a shard or the scheduler
    that is gone, an object whose owner died).
    """
    import ray.exceptions as rex

    deaths = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError)
    cause = error
    if isinstance(error, rex.RayTaskError):
        cause = getattr(error, "cause", None) or error
    died = isinstance(cause, deaths) or (isinstance(error, deaths) and not isinstance(error, rex.RayTaskError))
    text = f"{type(cause).__name__}: {cause}".strip()
    if isinstance(cause, rex.RayTaskError):  # ray's own wrapper class name is noise
        text = str(cause)
    line = next((ln for ln in text.splitlines() if ln.strip()), type(cause).__name__)
    return line[:500], died


@dataclass(frozen=True)
class Restarted:
    """A part came back after a failure.

    Args:
        component: "client", "shard" or "scheduler".
        id: which one.
        seconds: how long the restoring took (from the restarted constructor, or from the
            controller noticing a client's failure, until it was ready).
        detail: what it was restored from.
        replayed: steps a client replayed from the shard's log.
        step: a client's step number once restored (its next step is the first new one).
    """

    component: str
    id: int
    seconds: float
    detail: str
    replayed: int = 0
    step: int = 0


def fault_summary(writer, refusals: list[dict[str, int]]) -> dict:
    """The summary's fault fields: restarts, skipped steps, duplicate records dropped, and
    the messages the shards refused (by reason)."""
    from raysplit.training.guards import SkippedStep

    refused: dict[str, int] = {}
    for r in refusals:
        for reason, n in r.items():
            refused[reason] = refused.get(reason, 0) + n
    return {
        "restarts": [dataclasses.asdict(e) for e in writer.events if isinstance(e, Restarted)],
        "skipped_steps": sum(1 for e in writer.events if isinstance(e, SkippedStep)),
        "duplicate_records": writer.duplicates,
        "rejected_messages": dict(sorted(refused.items())),
    }
