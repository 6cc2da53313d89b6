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


class StateStore:
    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.held: dict[str, ray.ObjectRef] = {}

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

    def stats(self) -> dict:
        return {"keys": len(self.data), "held": len(self.held)}


StateStoreActor = ray.remote(StateStore)
