"""Coalescing: the requests one client process holds, sent to the tail as one call each batch.

A process that hosts many emulated clients (or an edge gateway in front of many devices)
has many requests in flight at once. Sent one by one, each pays Ray Serve's fixed cost per
request: a handle call routed in this process, a task on a replica, its own serialisation.
That is milliseconds of CPU against well under a millisecond of tail compute per image, so
on a few cores Serve's own work, not the tail, sets the pace (``benchmarks/serving.py``).
Coalesced, one call carries up to ``max_batch`` requests and pays that cost once.

Each request keeps its own message (its own budget: slices, channels or cut layer) and
gets its own answer; a malformed request fails alone (``TailService`` decodes each message
on its own). A call the deployment refuses (its queue is full) fails every request it
carried with :class:`~raysplit.serving.app.Overloaded`, naming the limits.

    tail = start(ServeConfig(model="runs/nair"))
    gateway = Coalescer(tail, max_batch=32, wait_s=0.002)
    answer = await gateway.infer_async(message)  # from many coroutines at once
"""

from __future__ import annotations

import asyncio

__all__ = ["Coalescer"]


class Coalescer:
    """Args:
    tail: a :class:`~raysplit.serving.app.TailClient` (anything with ``infer_many_async``).
    max_batch: most requests in one call; a call leaves as soon as it is full.
    wait_s: how long the first request of a call waits for others to join it (the most
        latency coalescing adds while a call can leave).
    max_in_flight: most calls sent and not yet answered (None: two per replica of a
        TailClient, else no limit). While that many are out, new requests gather for the next
        call, which leaves as soon as one comes back: under load the calls grow by
        themselves, without a longer wait.
    """

    def __init__(self, tail, *, max_batch: int = 32, wait_s: float = 0.002, max_in_flight: int | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not wait_s >= 0:
            raise ValueError(f"wait_s must be >= 0 s, got {wait_s}")
        if max_in_flight is None:
            replicas = getattr(getattr(tail, "cfg", None), "replicas", None)
            max_in_flight = 2 * replicas if replicas else 1 << 30
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.tail, self.max_batch, self.wait_s, self.max_in_flight = tail, int(max_batch), float(wait_s), int(max_in_flight)
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._since = 0.0  # when the oldest pending request arrived (the loop's clock)
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._calls: set[asyncio.Task] = set()  # strong references: a task nobody holds may be collected
        self.calls = 0  # calls sent
        self.requests = 0  # requests sent in them
        self.most_in_flight = 0

    async def infer_async(self, message: bytes) -> dict:
        """The answer to one message (as ``TailClient.infer_async``, for which this stands in)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            self._since = loop.time()
        self._pending.append((message, future))
        self._pump(loop)
        return await future

    def _pump(self, loop: asyncio.AbstractEventLoop, due: bool = False) -> None:
        """Send what may leave: full calls, and, when ``due`` (the wait is over, or a call
        came back), what is pending; then arm the timer for the rest."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and self._in_flight < self.max_in_flight:
            if len(self._pending) < self.max_batch and not due:
                break
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self._since = loop.time()
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            task = loop.create_task(self._send(batch, loop))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        if self._pending and self._in_flight < self.max_in_flight:
            self._timer = loop.call_at(self._since + self.wait_s, self._pump, loop, True)

    async def _send(self, batch: list[tuple[bytes, asyncio.Future]], loop: asyncio.AbstractEventLoop) -> None:
        self.calls += 1
        self.requests += len(batch)
        try:
            answers = await self.tail.infer_many_async([m for m, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"the tail answered {len(answers)} of {len(batch)} coalesced requests")
        except BaseException as e:  # every request of the call learns why (Overloaded, a lost replica, ...)
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        finally:
            self._in_flight -= 1
            self._pump(loop, due=True)  # what gathered while this call was out leaves now
        for (_, f), a in zip(batch, answers):
            if not f.done():
                f.set_result(a)
