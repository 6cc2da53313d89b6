"""Clients' recovery points, held once per client by the state store.

A client hands in a recovery point (its whole loop state, ~1.7 MB for vgg_small) after
every evaluation. The state store keeps the newest one per client as one object it owns
(``StateStore.keep_point``: it outlives the client's process and the shard's); the shard
keeps only a reference and the point's sequence number (:class:`RecoveryPoints`), trims
its reply log up to it, and its snapshot carries just those numbers. So a point's bytes
exist once, not once in the shard, once in the store's snapshot and once more per epoch
while a snapshot is being replaced (at 1,024 clients that was ~14 GB of the 21 GB peak).

Order: the client submits ``keep_point`` to the store and passes the call's result (an
object reference) to ``Shard.recovery_point``; Ray starts the shard's call only once the
store holds the point, so a shard never trims its log for a point the store lacks.

Without a store (recovery for checkpoints only, no restarts) the shard holds the states
themselves, as before.
"""

from __future__ import annotations

from typing import Any


def is_held(value: Any) -> bool:
    """A point as the store hands it back: ``[ObjectRef]`` (a list, so that Ray passes the
    reference on instead of resolving it)."""
    import ray

    return isinstance(value, list) and len(value) == 1 and isinstance(value[0], ray.ObjectRef)


class RecoveryPoints:
    """A shard's view of its clients' recovery points: per client the newest point's
    sequence number and its state (a reference to the store's copy, or the state itself).

    Args:
        store: the state store actor (None: states are held here, by value).
        shard_id: the shard's number (the store keys points by shard and client).
    """

    def __init__(self, store=None, shard_id: int = 0) -> None:
        self.store, self.shard_id = store, shard_id
        self.points: dict[int, tuple[int, Any]] = {}

    def set(self, client: int, seq: int, value: Any) -> bool:
        """Take ``client``'s point at ``seq`` (``value``: ``[ref]`` from the store, or the
        state); an older point than the one held is ignored (returns False)."""
        held = self.points.get(client)
        if held is not None and held[0] > seq:
            return False
        self.points[client] = (int(seq), value[0] if is_held(value) else value)
        return True

    def seq(self, client: int) -> int | None:
        held = self.points.get(client)
        return None if held is None else held[0]

    def state(self, client: int) -> dict | None:
        """``client``'s newest point's state (fetched from the store), None: none yet."""
        import ray

        held = self.points.get(client)
        if held is None:
            return None
        value = held[1]
        return ray.get(value) if isinstance(value, ray.ObjectRef) else value

    def states(self) -> dict[int, dict]:
        """Every client's point's state (a checkpoint's clients)."""
        return {c: self.state(c) for c in sorted(self.points)}

    def seqs(self) -> dict[int, int]:
        """What a shard snapshot carries: each client's point's sequence number only."""
        return {c: s for c, (s, _) in self.points.items()}

    def load_states(self, states: dict, seq_of) -> None:
        """Points given by value (a checkpoint being resumed): handed to the store, if any."""
        import ray

        for c, st in states.items():
            c, seq = int(c), int(seq_of(st))
            value = st if self.store is None else ray.get(self.store.keep_point.remote(self.shard_id, c, seq, st))
            self.set(c, seq, value)

    def load_from_store(self) -> None:
        """A restarted shard: the store's newest point of each of its clients (they may be
        newer than its snapshot, never older)."""
        import ray

        if self.store is None:
            return
        for c, (seq, value) in ray.get(self.store.points_of.remote(self.shard_id)).items():
            self.set(int(c), int(seq), value)
