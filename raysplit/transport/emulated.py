"""A transport over an emulated network: wraps any Transport (in-process, Ray shard).

Two modes (``LinkConfig.link_mode``):

* ``virtual``: the message goes through the inner transport at once (nothing sleeps);
  after the step the client's simulated clock is moved by the step's simulated cost:
  its compute (see :mod:`raysplit.link.compute`), the uplink of the exact message size
  over its link and the shared medium, the server's work, the downlink. The medium
  resolves overlapping transfers of all clients (``raysplit.link.medium``).
* ``realtime``: the uplink and the downlink really wait, sharing the medium with the
  other clients' transfers on the wall clock, so step latencies, the Ray dashboard and
  Prometheus see the link. The clock is the wall time of the client's steps.

In both modes a barrier of the schedule aligns the clocks (``align``): a client that
waited for the others resumes at the latest of their clocks. Inference (evaluation)
goes through untimed: evaluation is a measurement, not part of the emulated system.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from raysplit.link.compute import ComputeModel
from raysplit.link.port import MediumPort
from raysplit.link.timing import LinkTiming
from raysplit.transport.base import Reply, Transport


class EmulatedTransport(Transport):
    """Args:
    inner: the transport that really moves the bytes.
    port: the run's medium (``LocalPort`` or the medium actor's client).
    client: this client's id.
    mode: virtual | realtime.
    compute: turns measured step times into simulated compute (virtual mode).
    """

    def __init__(self, inner: Transport, port: MediumPort, client: int, *, mode: str = "virtual",
                 compute: ComputeModel | None = None) -> None:
        if mode not in ("virtual", "realtime"):
            raise ValueError(f"unknown link mode {mode!r}; choose virtual or realtime")
        if mode == "virtual" and compute is None:
            raise ValueError("virtual mode needs a compute model")
        self.inner, self.port, self.client, self.mode, self.compute = inner, port, client, mode, compute
        self.clock = 0.0
        self._last: tuple | None = None
        self._closed = False

    # -- moving bytes ---------------------------------------------------------------
    def round_trip(self, up: bytes, *, lr: float, phase: int) -> Reply:
        if self.mode == "virtual":
            reply = self.inner.round_trip(up, lr=lr, phase=phase)
            self._last = (len(up), reply)
            return reply
        t0 = time.perf_counter()
        pu = self.port.transfer(self.client, "up", len(up))
        t1 = time.perf_counter()
        reply = self.inner.round_trip(up, lr=lr, phase=phase)
        t2 = time.perf_counter()
        pd = self.port.transfer(self.client, "down", len(reply.result.grad))
        t3 = time.perf_counter()
        self._last = (pu, pd, t1 - t0, t2 - t1, t3 - t2)
        return reply

    def predict(self, up: bytes) -> np.ndarray:
        return self.inner.predict(up)

    # -- the clock --------------------------------------------------------------------
    def settle(self, times: dict, samples: int, slept: float = 0.0) -> LinkTiming:
        """The step just done, on this client's clock (blocks in virtual mode until the
        medium can settle it)."""
        if self._last is None:
            raise RuntimeError("settle() without a step")
        last, self._last = self._last, None
        if self.mode == "realtime":
            pu, pd, up_s, server_s, down_s = last
            compute = times["forward_s"] + times["backward_s"] + slept
            self.clock += times["forward_s"] + times["exchange_s"] + times["backward_s"] + slept
            return LinkTiming(compute, up_s, server_s, down_s, self.clock,
                              self.port.capacity(self.client, "up", None) / 1e6,
                              self.port.capacity(self.client, "down", None) / 1e6, pu.wire, pd.wire,
                              pu.latency_s + pu.feedback_s + pd.latency_s + pd.feedback_s)
        up_bytes, reply = last
        res = reply.result
        fwd = self.compute.client(samples, times["forward_s"], forward=True)
        bwd = self.compute.client(samples, times["backward_s"] + slept, forward=False)
        server = self.compute.server(samples, res.compute_s, res.merged)
        start = self.clock + fwd
        st = self.port.step(self.client, start, up_bytes, server, len(res.grad), bwd)
        self.clock = st.end
        return LinkTiming(fwd + bwd, st.up_end - st.start, st.server_end - st.up_end, st.down_end - st.server_end,
                          st.end, st.up_bps / 1e6, st.down_bps / 1e6, st.wire_up, st.wire_down, st.latency_s)

    def sim_clock(self) -> float:
        return self.clock

    def align(self, t: float | None) -> None:
        """A barrier passed at ``t``: resume there if it is later than this clock."""
        if t is not None and not math.isnan(t):
            self.clock = max(self.clock, float(t))

    def close(self) -> None:
        """This client is done: it no longer holds the medium's simulated time back."""
        if not self._closed:
            self._closed = True
            self.port.retire(self.client)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"clock": self.clock}

    def load_state_dict(self, state: dict) -> None:
        self.clock = float(state["clock"])


@dataclass(frozen=True)
class EmulatedLink:
    """What a client host needs to put a client behind the emulated network.

    Args:
        medium: the medium actor's handle.
        mode: virtual | realtime.
        compute: the client's compute model (virtual mode).
    """

    medium: object
    mode: str
    compute: ComputeModel | None

    def wrap(self, inner: Transport, client: int) -> EmulatedTransport:
        from raysplit.runtime.actors.medium import RemotePort

        return EmulatedTransport(inner, RemotePort(self.medium), client, mode=self.mode, compute=self.compute)
