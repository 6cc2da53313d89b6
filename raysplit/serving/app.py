"""The tail as a Ray Serve deployment: replicas of a :class:`~raysplit.serving.tail.TailService`,
each batching the requests that reach it.

    from raysplit.config.serve import ServeConfig
    from raysplit.serving.app import Overloaded, start
    tail = start(ServeConfig(model="runs/nair", replicas=2))   # on a running ray.init()
    answer = tail.infer(message_bytes)                        # or: await tail.infer_async(...)
    tail.shutdown()

A request is one codec message (``bytes``); the answer is a dict (``Answer.to_dict``). Within
a replica, requests that arrive within ``batch_wait_s`` of each other (up to
``max_batch_size``) run as one batch. Ray Serve's HTTP proxy stays off unless ``http_port``
is given (then ``POST /<route>`` with the message as the body answers JSON, so any process,
Python or not, can be a client). More requests than ``max_queued`` waiting at the handle
are refused at once with :class:`Overloaded`, naming the limits, rather than queued without
bound.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ray import serve
from ray.serve.exceptions import BackPressureError

from raysplit.config.serve import ServeConfig

__all__ = ["ServeConfig", "Overloaded", "SplitTail", "TailClient", "start"]


class Overloaded(RuntimeError):
    """The deployment's queue is full: the request was refused, not lost."""


@serve.deployment
class SplitTail:
    """One replica: a TailService, its requests batched."""

    def __init__(self, source: str, variant: str | None, threads: int, max_batch_size: int, batch_wait_s: float,
                 key_hex: str | None) -> None:
        from raysplit.serving.tail import TailService

        device = "cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu"
        self.service = TailService(source, variant=variant, device=device, threads=threads,
                                   key=bytes.fromhex(key_hex) if key_hex else None)
        self.infer.set_max_batch_size(max_batch_size)
        self.infer.set_batch_wait_timeout_s(batch_wait_s)
        self.batches: list[int] = []
        self.compute_s = 0.0  # time spent answering batches (decode + tail), to tell it from Serve's own cost
        # One thread answers, off the replica's event loop: the loop keeps taking requests (and
        # answering Serve's queue-length probes) while a batch computes, and batches run one at a time.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tail")

    def _answer(self, buffers: list[bytes]) -> list[dict]:
        t0 = time.perf_counter()
        out = [a.to_dict() for a in self.service.predict(list(buffers))]
        self.batches.append(len(buffers))
        self.compute_s += time.perf_counter() - t0
        return out

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def infer(self, buffers: list[bytes]) -> list[dict]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._answer, buffers)

    async def infer_many(self, buffers: list[bytes]) -> list[dict]:
        """Several requests in one call (a client process that coalesces the requests it holds,
        ``serving.coalesce``): answered as one batch, one answer per request, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._answer, buffers)

    async def __call__(self, request) -> dict:
        """HTTP: the request's body is the message."""
        body = request if isinstance(request, (bytes, bytearray)) else await request.body()
        return await self.infer(bytes(body))

    def stats(self) -> dict:
        """Requests answered and failed, the sizes of the batches run and the seconds spent
        answering them (decode + tail), by this replica."""
        return {"requests": self.service.requests, "failed": self.service.failed, "batches": list(self.batches),
                "compute_s": self.compute_s, "kind": self.service.kind, "pid": os.getpid()}


class TailClient:
    """A handle on a running tail deployment (from :func:`start`, or :meth:`connect`)."""

    def __init__(self, cfg: ServeConfig, handle) -> None:
        self.cfg, self.handle = cfg, handle
        self._infer = handle.options(method_name="infer")
        self._infer_many = handle.options(method_name="infer_many")

    @classmethod
    def connect(cls, cfg: ServeConfig) -> "TailClient":
        return cls(cfg, serve.get_app_handle(cfg.name))

    def _overloaded(self, e: Exception) -> Overloaded:
        return Overloaded(
            f"serving {self.cfg.name!r} is overloaded: more than {self.cfg.max_queued} requests are queued for its "
            f"{self.cfg.replicas} replica(s) (each holds at most {self.cfg.max_ongoing}); the request was refused, "
            f"retry later or add replicas ({type(e).__name__}: {e})"
        )

    def infer(self, message: bytes, timeout_s: float | None = 60.0) -> dict:
        """Send one message and wait for its answer (raises Overloaded when refused)."""
        try:
            return self._infer.remote(message).result(timeout_s=timeout_s)
        except BackPressureError as e:
            raise self._overloaded(e) from None

    async def infer_async(self, message: bytes) -> dict:
        try:
            return await self._infer.remote(message)
        except BackPressureError as e:
            raise self._overloaded(e) from None

    async def infer_many_async(self, messages: list[bytes]) -> list[dict]:
        """Several messages in one call, one answer each (raises Overloaded when refused)."""
        try:
            return await self._infer_many.remote(list(messages))
        except BackPressureError as e:
            raise self._overloaded(e) from None

    def stats(self) -> list[dict]:
        """Every replica's stats (asks until each replica has answered once)."""
        seen: dict[int, dict] = {}
        h = self.handle.options(method_name="stats")
        for _ in range(20 * self.cfg.replicas):
            s = h.remote().result(timeout_s=30)
            seen[s["pid"]] = s
            if len(seen) >= self.cfg.replicas:
                break
        return list(seen.values())

    def shutdown(self) -> None:
        serve.delete(self.cfg.name)


def start(cfg: ServeConfig) -> TailClient:
    """Deploy the tail on the running Ray (``ray.init()`` first) and return a client for it."""
    if cfg.http_port is None:
        serve.start(proxy_location="Disabled")
    else:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": cfg.http_port})
    threads = max(1, int(round(cfg.cpus_per_replica)))
    app = SplitTail.options(
        num_replicas=cfg.replicas,
        max_ongoing_requests=cfg.max_ongoing,
        max_queued_requests=cfg.max_queued,
        logging_config={"enable_access_log": cfg.access_log, "log_level": "INFO" if cfg.access_log else "WARNING"},
        ray_actor_options={"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica,
                           "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads)}}},
    ).bind(cfg.model, cfg.variant, threads, cfg.max_batch_size, cfg.batch_wait_s, cfg.key_hex)
    handle = serve.run(app, name=cfg.name, route_prefix=f"/{cfg.name}" if cfg.http_port is not None else None)
    return TailClient(cfg, handle)

