"""State store actor: where recovery state lives outside the processes that may die.

A restarted shard reloads its last snapshot from here, a restarted scheduler its journal
(``runtime/recovery.py``), and states clients hand in for averaging or saving are held
here (``hold``) so that the object survives the death of the scheduler that collects it:
the store owns it, the scheduler only holds a reference.

Like the driver and the record buffer, the store is part of the controller: it does no
training, and if it is killed the run stops (resume it with ``--resume RUN_DIR``).
"""

from __future__ import annotations

from typing import Any

import ray

from raysplit.runtime.points import Held


class StateStore:
    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.held: dict[str, ray.ObjectRef] = {}
        self.points: dict[tuple[int, int], tuple[int, Any]] = {}  # (shard, client) -> (seq, its packed state)

    def put(self, key, value) -> None:
        self.data[key] = value

    def get(self, key, default=None):
        return self.data.get(key, default)

    def hold(self, value) -> list:
        """Put ``value`` in the object store, owned by this actor; returns [ref] (a list, so
        that Ray hands back the reference rather than the value)."""
        ref = ray.put(value)
        self.held[ref.hex()] = ref
        return [ref]

    def release(self, refs: list) -> None:
        """Stop holding these references (their collection was used)."""
        for r in refs:
            self.held.pop(r.hex(), None)

    def keep_point(self, shard: int, client: int, seq: int, state):
        """Hold ``client``'s recovery point (``runtime/points.py``): one per client, the
        newest (an older ``seq`` than the one held is ignored); returns ``Held(seq held)``."""
        key = (int(shard), int(client))
        held = self.points.get(key)
        if held is None or held[0] <= seq:
            held = self.points[key] = (int(seq), state)
        return Held(held[0])

    def point(self, shard: int, client: int):
        """(seq, state) of ``client``'s point, None: none."""
        return self.points.get((int(shard), int(client)))

    def points_of(self, shard: int) -> dict:
        """{client: (seq, state)}: the recovery points of ``shard``'s clients."""
        return {c: held for (k, c), held in self.points.items() if k == int(shard)}

    def point_seqs(self, shard: int) -> dict[int, int]:
        return {c: seq for (k, c), (seq, _) in self.points.items() if k == int(shard)}

    def stats(self) -> dict:
        return {"keys": len(self.data), "held": len(self.held), "points": len(self.points)}


StateStoreActor = ray.remote(StateStore)
