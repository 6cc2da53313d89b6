"""Medium actor: the run's emulated network (``raysplit.link.medium.Medium``) behind one
async actor, which every client's transport calls and the scheduler keeps informed.

Virtual mode: ``step`` waits until the conservative rule lets the step be settled (no
client can still act before its events) and returns its simulated timing; ``hold`` /
``release`` / ``retire`` come from the scheduler (barriers, failures) and the clients
(done). Realtime mode: ``transfer`` waits on the wall clock while the message crosses,
sharing the medium with the transfers in flight; a timer settles each ending.

It records the medium's utilisation (carried / capacity of each cell and backhaul over
the last interval, on the simulated or the wall clock) as a metric, at most once a
second of wall time.
"""

from __future__ import annotations

import asyncio
import math
import time

import ray

from raysplit.identity import Identity
from raysplit.link.medium import Medium, StepTiming, TransferPlan
from raysplit.observability.metrics import Recorder

METRICS_EVERY_S = 1.0


class MediumHost:
    """Args:
    medium: the network.
    mode: virtual | realtime.
    identity: the run's identity (metric tags).
    """

    def __init__(self, medium: Medium, mode: str, identity: Identity) -> None:
        self.medium, self.mode, self.identity = medium, mode, identity
        self.metrics = Recorder()
        self.waiting: dict[int, asyncio.Future] = {}  # virtual: client -> its step's future
        self.in_flight: dict[int, tuple[asyncio.Future, TransferPlan, int, str]] = {}  # realtime: job id -> ...
        self.t0 = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self._last_metrics = (time.monotonic(), self._clock(), self._carried())

    async def ready(self) -> dict:
        return {"clients": self.medium.clients, "cells": list(self.medium.cells), "mode": self.mode}

    # -- virtual ------------------------------------------------------------------
    async def step(self, client: int, start: float, up_bytes: int, server_s: float, down_bytes: int,
                   after_s: float) -> StepTiming:
        self.medium.submit_step(client, start, up_bytes, server_s, down_bytes, after_s)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[client] = fut
        self._progress()
        return await fut

    def _progress(self) -> None:
        for t in self.medium.progress():
            self.medium.take(t.client)
            fut = self.waiting.pop(t.client, None)
            if fut is not None and not fut.done():
                fut.set_result(t)
        self._record()

    async def hold(self, client: int) -> None:
        self.medium.hold(client)
        self._progress()

    async def release(self, clients: list[int], t: float) -> None:
        self.medium.release(clients, t)
        self._progress()

    async def retire(self, client: int) -> None:
        self.medium.retire(client)
        fut = self.waiting.pop(client, None)
        if fut is not None and not fut.done():
            fut.set_exception(RuntimeError(f"client {client} was retired while its step was open"))
        if self.mode == "virtual":
            self._progress()

    # -- realtime -----------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() - self.t0

    async def transfer(self, client: int, direction: str, payload: int) -> tuple[TransferPlan, float]:
        """Wait while ``payload`` bytes cross; returns (the transfer's plan, the client's
        link capacity when it began, bit/s)."""
        now = self._now()
        self._settle(now)
        jid, plan = self.medium.start_transfer(client, direction, payload, now)
        fut = asyncio.get_running_loop().create_future()
        self.in_flight[jid] = (fut, plan, client, direction)
        self._schedule()
        cap = self.medium.capacity_now(client, direction, now)
        await fut
        return plan, cap

    def _settle(self, now: float) -> None:
        for job in self.medium.net.advance(now):
            entry = self.in_flight.pop(job.id, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(None)
        self._record()

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        net = self.medium.net
        net.allocate()
        t = net.next_event()
        if math.isfinite(t):
            self.timer = asyncio.get_running_loop().call_later(max(t - self._now(), 0.0), self._tick)

    def _tick(self) -> None:
        self.timer = None
        self._settle(self._now())
        self._schedule()

    # -- what it reports --------------------------------------------------------------
    def _clock(self) -> float:
        return self.medium.net.now if self.mode == "virtual" else self._now()

    def _carried(self) -> dict[str, float]:
        return {r: self.medium.net.usage[r].carried for r in self.medium.medium_names()}

    def _record(self) -> None:
        wall = time.monotonic()
        w0, c0, carried0 = self._last_metrics
        if wall - w0 < METRICS_EVERY_S:
            return
        clock, carried = self._clock(), self._carried()
        dt = clock - c0
        if dt > 0 and self.metrics.enabled:
            for r, units in carried.items():
                cap = self.medium.net.resources[r].rate_at(clock)
                self.metrics.medium_utilization(r, (units - carried0.get(r, 0.0)) / (cap * dt),
                                                tenant=self.identity.tenant)
        self._last_metrics = (wall, clock, carried)

    async def utilization(self) -> dict[str, float]:
        """Carried / offered capacity of each shared resource while it was in use."""
        return {r: self.medium.net.utilization(r) for r in self.medium.medium_names()}

    async def state_dict(self) -> dict:
        return self.medium.state_dict()

    async def load_state_dict(self, state: dict) -> None:
        self.medium.load_state_dict(state)


MediumActor = ray.remote(MediumHost)


class RemotePort:
    """A client's view of the medium actor (``raysplit.link.port.MediumPort``)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self._cap: dict[tuple[int, str], float] = {}

    def step(self, client, start, up_bytes, server_s, down_bytes, after_s) -> StepTiming:
        return ray.get(self.handle.step.remote(client, start, up_bytes, server_s, down_bytes, after_s))

    def transfer(self, client: int, direction: str, payload: int) -> TransferPlan:
        plan, cap = ray.get(self.handle.transfer.remote(client, direction, payload))
        self._cap[(client, direction)] = cap
        return plan

    def capacity(self, client: int, direction: str, t: float | None) -> float:
        """Realtime: the capacity the last transfer began with (t is not used)."""
        return self._cap.get((client, direction), math.nan)

    def retire(self, client: int) -> None:
        ray.get(self.handle.retire.remote(client))
