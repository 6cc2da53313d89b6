"""How each part of a cluster run comes back after its process was killed.

Ray restarts a dead actor (``max_restarts``) by running its constructor again; what
brings the state back is here.

* **Client** (``recover_client``): the controller's failure policy says RESTART; the
  client's host (restarted by Ray, or alive when only the client's code failed) rebuilds
  the client, loads the recovery state its shard holds for it (its loop state after its
  last evaluation) and replays the replies the shard logged since
  (``training/replay.py``). It then rejoins the schedule where it was: no step is lost,
  none is applied twice (step ids make the shard idempotent), and its state is exactly
  what it was.
* **Shard** (``restore_shard``, called by the constructor of a restarted shard): it loads
  its last snapshot from the state store (taken every epoch, once every live client has
  evaluated it: tail, momentum, step log, the step of each client's recovery point; the
  points themselves are held once each by the store, ``runtime/points.py``) and, with replicas,
  copies a live replica's modules. Clients' in-flight calls are retried by Ray against
  it (``max_task_retries``). Updates to the tail since the snapshot are lost (without
  replicas); no sample is lost or counted twice.
* **Scheduler** (:class:`SchedulerJournal`): it writes its state to the store before it
  answers any client (write-ahead, with the actions still to perform), so a restart
  reloads the current budget, every client's progress, the states collected so far and
  the actions in progress, and performs those again (they are idempotent). Callers
  that arrive while a write is in flight share the next one (group commit). Clients'
  calls are retried by Ray; a report it has already seen is recognised by its sequence
  number and not counted twice. States clients hand in are held by the store
  (``StoreHeldScheduler``), so they outlive a scheduler that dies collecting them.

Each restart puts a :class:`Restarted` event in the record buffer; the controller
counts it, asks the failure policy, and records it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from raysplit.runtime.failure import Restarted
from raysplit.runtime.group_commit import GroupCommit

log = logging.getLogger("raysplit.recovery")


def _announce(buffer, event: Restarted) -> None:
    print(f"[raysplit] {event.component} {event.id} restarted in {event.seconds:.2f} s from {event.detail}"
          + (f", {event.replayed} steps replayed" if event.replayed else ""), flush=True)
    if buffer is not None:
        buffer.put.remote([event])


# -- shards ---------------------------------------------------------------------------
def restore_shard(shard, store, buffer, t0: float) -> None:
    """In a restarted shard's constructor: its last snapshot, then a live replica's modules."""
    snap = ray.get(store.get.remote(("shard", shard.shard_id)))
    detail = "its initial state (no snapshot yet)"
    if snap is not None:
        shard.pool.submit(shard._load, snap).result()
        detail = "its last snapshot"
    for k, other in enumerate(ray.get(store.get.remote("shards")) or []):
        if k == shard.shard_id:
            continue
        try:
            state = ray.get(other.modules_state.remote(), timeout=60)
        except Exception:  # noqa: BLE001 - that replica is down too: try the next
            continue
        shard.pool.submit(shard.server.load_modules_state, state).result()
        detail += f", modules re-synchronised from replica {k}"
        break
    _announce(buffer, Restarted("shard", shard.shard_id, time.perf_counter() - t0, detail))


# -- clients --------------------------------------------------------------------------
def recover_client(loop, shard, steps_per_epoch: int) -> tuple[str, int]:
    """Bring a freshly built client ``loop`` to where it was: its shard's recovery state
    for it, then the logged replies. Returns (what it was restored from, steps replayed)."""
    from raysplit.training.replay import replay

    state, entries = ray.get(shard.recovery.remote(loop.id))
    if state is not None:
        loop.load_state_dict(state)
        detail = f"its recovery point (step {loop.client.step}, epoch {loop.epoch})"
    else:
        detail = "its initial state"
    first = entries[0][0] if entries else None
    if first is not None and first > loop.client.step + 1:
        log.warning("client %s: the shard's log starts at step %s, after its state's step %s (the shard restarted "
                    "since); the steps between change nothing here", loop.id, first, loop.client.step)
    return detail, replay(loop, entries, steps_per_epoch)


class StoreHeldScheduler:
    """The scheduler actor as a client loop's scheduler (a blocking call), with the
    states a report carries (heads, checkpoints) held by the state store: the report
    carries references, so the collected states survive the scheduler's death.

    Args:
        handle: the scheduler actor.
        store: the state store actor (None: states travel by value).
    """

    def __init__(self, handle, store=None) -> None:
        self.handle, self.store = handle, store

    def next(self, client: int, report):
        if report is not None and report.state and self.store is not None:
            import dataclasses

            held = {k: ray.get(self.store.hold.remote(v))[0] for k, v in report.state.items()}
            report = dataclasses.replace(report, state=held)
        return ray.get(self.handle.next.remote(client, report))


# -- the scheduler --------------------------------------------------------------------
class SchedulerJournal:
    """The scheduler's state in the store, written before it answers anyone.

    Concurrent callers share writes (group commit, ``runtime/group_commit.py``): ``save``
    returns once a write whose snapshot was taken after the call (so after the caller's
    report and actions were applied and added) is in the store; while one is in flight the
    others wait for the next. The snapshot is serialised by ``store.put.remote`` when the
    write starts, with the actions pending at that moment.

    Args:
        store: the state store actor.
        core: the scheduler's coordinator.
    """

    KEY = "scheduler"

    def __init__(self, store, core) -> None:
        self.store, self.core = store, core
        self.pending: dict[int, Any] = {}
        self._n = 0
        self.group = GroupCommit(self._entry, lambda entry: self.store.put.remote(self.KEY, entry))

    @property
    def stats(self) -> dict:
        """What the journal cost (``CommitStats``): requests, store puts, seconds."""
        return self.group.stats.as_dict()

    def add(self, actions: list) -> list[int]:
        ids = []
        for a in actions:
            self._n += 1
            self.pending[self._n] = a
            ids.append(self._n)
        return ids

    def done(self, ids: list[int]) -> None:
        for i in ids:
            self.pending.pop(i, None)

    def _entry(self) -> dict:
        return {"core": core_state(self.core), "pending": list(self.pending.values())}

    async def save(self) -> None:
        await self.group.commit()

    def load(self) -> list | None:
        """Load the journal into the coordinator; returns the actions that were in progress
        (None: nothing was journalled, a first start)."""
        saved = ray.get(self.store.get.remote(self.KEY))
        if saved is None:
            return None
        load_core_state(self.core, saved["core"])
        return list(saved["pending"])


def core_state(core) -> dict:
    """Everything of a Coordinator, collections included (states held in the store are
    references, so this stays small)."""
    return {"state": core.state_dict(), "heads": core.heads, "model_heads": core.model_heads, "ckpt": core.ckpt,
            "averaged": core.averaged, "evaluated": getattr(core, "evaluated", {})}


def load_core_state(core, saved: dict) -> None:
    core.load_state_dict(saved["state"])
    core.heads, core.model_heads, core.ckpt = saved["heads"], saved["model_heads"], saved["ckpt"]
    core.averaged = saved["averaged"]
    if hasattr(core, "evaluated"):
        core.evaluated = saved["evaluated"]


def resolve(value):
    """A state given directly, or as an object reference (fetched)."""
    if isinstance(value, ray.ObjectRef):
        return ray.get(value)
    return value


def held_refs(states: dict) -> list:
    """The object references among a collection's values (to release from the store)."""
    return [v for v in states.values() if isinstance(v, ray.ObjectRef)]

