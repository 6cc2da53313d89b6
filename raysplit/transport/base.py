"""The seam between a client and the server half it trains against.

A :class:`Transport` carries one client's activation message to a server and brings the
gradient message back (``exchange``), or carries an inference message and brings the
predictions back (``infer``). Implementations say only how the bytes travel
(``round_trip``, ``predict``); the base class is the one place where what crossed is
counted, from ``len(buffer)``, and timed. An emulated link wraps another transport and
adds its time, loss and shaping around the inner ``round_trip``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from raysplit.training.server import ServerResult


@dataclass(frozen=True)
class Reply:
    """What came back for one activation message.

    Args:
        result: the server's answer (gradient message, loss, ...).
        queue_s: seconds the message waited at the server before its step began.
    """

    result: ServerResult
    queue_s: float = 0.0


@dataclass(frozen=True)
class Exchange:
    """One training round trip as the client saw it.

    Args:
        reply: what came back.
        bytes_up: len of the activation message.
        bytes_down: len of the gradient message.
        seconds: wall time from handing the message over to holding the reply.
    """

    reply: Reply
    bytes_up: int
    bytes_down: int
    seconds: float

    @property
    def grad(self) -> bytes:
        return self.reply.result.grad


@dataclass(frozen=True)
class Inference:
    """One inference round trip: predictions and the bytes sent up."""

    predictions: np.ndarray
    bytes_up: int
    seconds: float


class Transport(ABC):
    """How one client's messages reach its server half."""

    def exchange(self, up: bytes, *, lr: float, phase: int) -> Exchange:
        """Send an activation message, return the gradient message and what it cost."""
        t = time.perf_counter()
        reply = self.round_trip(up, lr=lr, phase=phase)
        return Exchange(reply, len(up), len(reply.result.grad), time.perf_counter() - t)

    def infer(self, up: bytes) -> Inference:
        """Send an inference message, return the predicted classes."""
        t = time.perf_counter()
        pred = self.predict(up)
        return Inference(pred, len(up), time.perf_counter() - t)

    # An emulated network (``transport.emulated``) overrides these four; a plain
    # transport has no link, so no clock and nothing to settle.
    def settle(self, times: dict, samples: int, slept: float = 0.0):
        """The link cost of the step just done (a ``raysplit.link.timing.LinkTiming``), or
        None without an emulated link."""
        return None

    def sim_clock(self) -> float:
        """This client's emulated clock (NaN without a link)."""
        return float("nan")

    def align(self, t: float | None) -> None:
        """A barrier of the schedule passed at emulated time ``t``."""

    def close(self) -> None:
        """The client is done with this transport."""

    @abstractmethod
    def round_trip(self, up: bytes, *, lr: float, phase: int) -> Reply:
        """Deliver a training message; the server steps with ``lr`` in ``phase``."""

    @abstractmethod
    def predict(self, up: bytes) -> np.ndarray:
        """Deliver an inference message; return the predictions."""
