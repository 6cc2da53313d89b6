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
        latency coalescing adds).
    """

    def __init__(self, tail, *, max_batch: int = 32, wait_s: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not wait_s >= 0:
            raise ValueError(f"wait_s must be >= 0 s, got {wait_s}")
        self.tail, self.max_batch, self.wait_s = tail, int(max_batch), float(wait_s)
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task] = set()  # strong references: a task nobody holds may be collected
        self.calls = 0  # calls sent
        self.requests = 0  # requests sent in them

    async def infer_async(self, message: bytes) -> dict:
        """The answer to one message (as ``TailClient.infer_async``, for which this stands in)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((message, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            task = asyncio.ensure_future(self._send(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _send(self, batch: list[tuple[bytes, asyncio.Future]]) -> None:
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
        for (_, f), a in zip(batch, answers):
            if not f.done():
                f.set_result(a)
