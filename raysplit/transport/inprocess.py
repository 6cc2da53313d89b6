"""Client and server in one process (the local reference trainer): a direct call."""

from __future__ import annotations

import numpy as np

from raysplit.training.server import SplitServer
from raysplit.transport.base import Reply, Transport


class InProcessTransport(Transport):
    """Args:
    server: the server half, called directly (no queue, no merging)."""

    def __init__(self, server: SplitServer) -> None:
        self.server = server

    def round_trip(self, up: bytes, *, lr: float, phase: int) -> Reply:
        (result,) = self.server.train_step([up], lr, phase)
        return Reply(result)

    def predict(self, up: bytes) -> np.ndarray:
        (pred,) = self.server.predict([up])
        return pred
