"""A shard's record of the steps it applied: what makes a step idempotent.

Every training message carries its client's id and step number. The shard applies a step
at most once: :class:`StepLog` keeps, per client, the last step applied and the replies of
the steps applied since that client's last recovery point (``forget`` moves it). So

* a retried message (the client's process restarted, or Ray retried the call after the
  shard restarted) gets the reply it already had, and the tail is not updated twice;
* a restarted client replays those replies (``since``) to rebuild exactly the state it
  lost (``raysplit.training.replay``);
* a checkpoint that holds the shard's state *and* its log is a consistent cut even when
  clients move at their own pace: each client's saved state plus its logged replies give
  exactly the steps the saved tail has seen.

A step at or below the last applied one that is not in the log is a replay or arrives
out of order: the shard refuses it.

Without recovery (``keep=False``) only each client's last reply is kept: enough to answer
a retried in-flight step, and no memory grows.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from raysplit.training.server import ServerResult
from raysplit.transport.base import Reply


class StepLog:
    """Args:
    keep: keep every reply since each client's last ``forget`` (True), or only its last.
    """

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.last: dict[int, int] = {}
        self.entries: dict[int, OrderedDict[int, Reply]] = {}

    def lookup(self, client: int, step: int) -> Reply | None:
        """The reply of an applied step still held, else None."""
        return self.entries.get(client, {}).get(step)

    def is_stale(self, client: int, step: int) -> bool:
        """A step at or below the last applied one (a replay, or out of order)."""
        return step <= self.last.get(client, 0)

    def record(self, client: int, step: int, reply: Reply) -> None:
        log = self.entries.setdefault(client, OrderedDict())
        if not self.keep:
            log.clear()
        log[step] = reply
        self.last[client] = max(step, self.last.get(client, 0))

    def since(self, client: int, step: int) -> list[tuple[int, Reply]]:
        """Held replies of ``client`` after ``step``, in step order."""
        return [(s, r) for s, r in self.entries.get(client, {}).items() if s > step]

    def forget(self, client: int, upto: int) -> int:
        """Drop the replies of ``client`` up to step ``upto`` (its recovery point moved
        there); returns how many were dropped."""
        log = self.entries.get(client)
        if not log:
            return 0
        old = [s for s in log if s <= upto]
        for s in old:
            del log[s]
        return len(old)

    def nbytes(self) -> int:
        """Bytes of the gradient messages held."""
        return sum(len(r.result.grad) for log in self.entries.values() for r in log.values())

    # -- state (plain types: checkpoints load with weights_only=True) ----------------
    def state_dict(self) -> dict:
        return {
            "keep": self.keep,
            "last": dict(self.last),
            "entries": {c: [(s, _reply_to_tuple(r)) for s, r in log.items()] for c, log in self.entries.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.keep = bool(state["keep"])
        self.last = {int(c): int(s) for c, s in state["last"].items()}
        self.entries = {
            int(c): OrderedDict((int(s), _reply_from_tuple(t)) for s, t in items)
            for c, items in state["entries"].items()
        }


def last_seq(loop_state: dict) -> int:
    """The last message sequence number in a client loop's state (its step; U-shaped
    clients send two messages a step)."""
    c = loop_state["client"]
    return int(c.get("seq", c["step"]))


def _reply_to_tuple(r: Reply) -> dict:
    # a dict of the result's fields: new ServerResult fields travel without a change here
    return {**dataclasses.asdict(r.result), "queue_s": r.queue_s}


def _reply_from_tuple(t: dict) -> Reply:
    fields = dict(t)
    queue_s = float(fields.pop("queue_s"))
    return Reply(ServerResult(**fields), queue_s)
