"""Client and server in different Ray actors: the message goes as ``bytes`` in an actor
call to the shard (inline in the call when small, through the object store when large),
and the reply comes back the same way. Bytes, not tensors: numpy/bytes travel through
Ray many times faster than pickled tensors."""

from __future__ import annotations

import numpy as np
import ray

from raysplit.transport.base import Reply, Transport


class RayShardTransport(Transport):
    """Args:
    shard: the shard actor's handle (``raysplit.runtime.actors.shard.ShardActor``)."""

    def __init__(self, shard) -> None:
        self.shard = shard

    def round_trip(self, up: bytes, *, lr: float, phase: int) -> Reply:
        return ray.get(self.shard.train.remote(up, lr, phase))

    def predict(self, up: bytes) -> np.ndarray:
        return ray.get(self.shard.predict.remote(up))
