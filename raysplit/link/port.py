"""How a client's transport reaches the run's :class:`~raysplit.link.medium.Medium`.

:class:`LocalPort` holds the medium in this process (the local trainer; tests with
clients on threads); the cluster's clients use the medium actor through the same three
calls (``raysplit.runtime.actors.medium``). Both block the calling client only:

* ``step(...)`` (virtual mode): submit a finished step, wait until the conservative rule
  lets it be settled, return its :class:`~raysplit.link.medium.StepTiming`;
* ``transfer(client, direction, payload)`` (realtime mode): really wait while the message
  crosses, sharing the medium with whatever else is crossing; return its plan;
* ``retire(client)``, ``hold(client)``, ``release(clients, t)``: the schedule's news.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

from raysplit.link.medium import Medium, StepTiming, TransferPlan


class MediumPort(Protocol):
    def step(self, client: int, start: float, up_bytes: int, server_s: float, down_bytes: int,
             after_s: float) -> StepTiming: ...

    def transfer(self, client: int, direction: str, payload: int) -> TransferPlan: ...

    def capacity(self, client: int, direction: str, t: float | None) -> float: ...

    def retire(self, client: int) -> None: ...


class LocalPort:
    """The medium in this process, safe to call from several client threads.

    Args:
        medium: the network.
        clock: wall clock for realtime mode (seconds; default ``time.monotonic``).
    """

    def __init__(self, medium: Medium, clock=time.monotonic) -> None:
        self.medium = medium
        self.cond = threading.Condition()
        self.clock = clock
        self.t0 = clock()
        self.arrived: dict[int, object] = {}  # realtime: finished transfer jobs by id

    # -- virtual ------------------------------------------------------------------
    def step(self, client, start, up_bytes, server_s, down_bytes, after_s) -> StepTiming:
        with self.cond:
            self.medium.submit_step(client, start, up_bytes, server_s, down_bytes, after_s)
            self._progress()
            while True:
                t = self.medium.take(client)
                if t is not None:
                    return t
                self.cond.wait()

    def _progress(self) -> None:
        if self.medium.progress():
            self.cond.notify_all()

    def hold(self, client: int) -> None:
        with self.cond:
            self.medium.hold(client)
            self._progress()

    def release(self, clients, t: float) -> None:
        with self.cond:
            self.medium.release(clients, t)
            self._progress()

    def retire(self, client: int) -> None:
        with self.cond:
            self.medium.retire(client)
            self._progress()

    def capacity(self, client: int, direction: str, t: float | None) -> float:
        """The client's link capacity at simulated time t (None: now, on the wall clock)."""
        return self.medium.capacity_now(client, direction, self.now() if t is None else t)

    # -- realtime -----------------------------------------------------------------
    def now(self) -> float:
        return self.clock() - self.t0

    def transfer(self, client: int, direction: str, payload: int) -> TransferPlan:
        net = self.medium.net
        with self.cond:
            net.advance(self.now())
            jid, plan = self.medium.start_transfer(client, direction, payload, self.now())
            self.cond.notify_all()  # the others' rates changed
            while True:
                for job in net.advance(self.now()):
                    self.arrived[job.id] = job
                self.cond.notify_all()
                if self.arrived.pop(jid, None) is not None:
                    return plan
                nxt = net.next_event()
                self.cond.wait(timeout=None if math.isinf(nxt) else max(nxt - self.now(), 0.0) + 1e-4)

