"""Clients' recovery points, held once per client by the state store.

A client hands in a recovery point (its whole loop state, ~1.7 MB for vgg_small) after
an evaluation once its shard's log of its replies since the last point outweighs the point
(``ClientLoop.recovery_min_bytes``), after a directive that loaded an average, and mid-epoch
once that log reaches ``RECOVERY_BYTES``. The state store keeps the newest one per client
(``StateStore.keep_point``: it outlives the client's process and the shard's); the shard
keeps only the point's sequence number (:class:`RecoveryPoints`), trims its reply log up
to it, and its snapshot carries just those numbers. So a point's bytes exist once, not
once in the shard, once more in the store's snapshot and again while a snapshot is being
replaced (at 1,024 clients that was ~14 GB of a 21 GB peak).

Order: the client submits ``keep_point`` to the store and passes the call's result (a
:class:`Held`, by object reference) to ``Shard.recovery_point``; Ray starts the shard's
call only once the store holds the point, so the store's point is never older than the
one the shard trimmed its log for. It may be newer (the shard's call still on its way):
that is still a consistent cut, since the log then holds the replies after both points,
so the shard reads the store's point and replays from *its* step.

Points travel as numpy (:func:`pack`): Ray passes numpy arrays without pickling their
bytes, where torch tensors go through ``torch.save``; :func:`unpack` restores the tensors
when a point is read back (a restart, a checkpoint).

Without a store (recovery for checkpoints only, no restarts) the shard holds the states
themselves, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Held:
    """The state store's answer to ``keep_point``: it holds the point at ``seq``."""

    seq: int


@dataclass(frozen=True)
class PackedTensor:
    """A torch tensor as its raw bytes (any dtype, bfloat16 included) and shape."""

    data: np.ndarray
    dtype: str
    shape: tuple[int, ...]


def pack(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples) with every torch tensor as a :class:`PackedTensor`."""
    if isinstance(tree, torch.Tensor):
        t = tree.detach().cpu().contiguous()
        return PackedTensor(t.reshape(-1).view(torch.uint8).numpy().copy(), str(t.dtype).removeprefix("torch."),
                            tuple(t.shape))
    if isinstance(tree, dict):
        return {k: pack(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(pack(v) for v in tree)
    return tree


def unpack(tree: Any) -> Any:
    """The inverse of :func:`pack` (fresh tensors, not views of the stored bytes)."""
    if isinstance(tree, PackedTensor):
        flat = torch.from_numpy(np.array(tree.data, copy=True)).view(getattr(torch, tree.dtype))
        return flat.reshape(tree.shape)
    if isinstance(tree, dict):
        return {k: unpack(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(unpack(v) for v in tree)
    return tree


class RecoveryPoints:
    """A shard's view of its clients' recovery points: per client the newest point's
    sequence number (its state in the state store, or here without one).

    Args:
        store: the state store actor (None: states are held here, by value).
        shard_id: the shard's number (the store keys points by shard and client).
    """

    def __init__(self, store=None, shard_id: int = 0) -> None:
        self.store, self.shard_id = store, shard_id
        self.seqs: dict[int, int] = {}
        self.values: dict[int, Any] = {}  # without a store only

    def set(self, client: int, seq: int, value: Any = None) -> bool:
        """Take ``client``'s point at ``seq`` (``value``: the state, or a :class:`Held`);
        an older point than the one held is ignored (returns False)."""
        if self.seqs.get(client, -1) > seq:
            return False
        self.seqs[client] = int(seq)
        if not isinstance(value, Held):
            self.values[client] = value
        return True

    def get(self, client: int) -> tuple[int, dict] | None:
        """``client``'s newest point as (its step, its state); None: none yet."""
        import ray

        if self.store is None:
            return None if client not in self.seqs else (self.seqs[client], unpack(self.values[client]))
        held = ray.get(self.store.point.remote(self.shard_id, client))
        return None if held is None else (held[0], unpack(held[1]))

    def states(self) -> dict[int, dict]:
        """Every client's newest point's state (a checkpoint's clients)."""
        import ray

        if self.store is None:
            return {c: unpack(self.values[c]) for c in sorted(self.seqs)}
        held = ray.get(self.store.points_of.remote(self.shard_id))
        return {c: unpack(st) for c, (_, st) in sorted(held.items())}

    def load_states(self, states: dict, seq_of) -> None:
        """Points given by value (a checkpoint being resumed): handed to the store, if any."""
        import ray

        for c, st in states.items():
            c, seq = int(c), int(seq_of(st))
            value = st if self.store is None else ray.get(self.store.keep_point.remote(self.shard_id, c, seq, pack(st)))
            self.set(c, seq, value)

    def load_from_store(self) -> None:
        """A restarted shard: the steps of the store's newest points of its clients (they
        may be newer than its snapshot, never older)."""
        import ray

        if self.store is None:
            return
        for c, seq in ray.get(self.store.point_seqs.remote(self.shard_id)).items():
            self.set(int(c), int(seq), Held(int(seq)))
