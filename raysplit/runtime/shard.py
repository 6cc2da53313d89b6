"""Server shard actor: a replica of the tail that merges clients' micro-batches.

The actor is async: ``train`` calls from many clients queue up while the previous merged
step computes on the shard's single worker thread, and the next step takes everything
that arrived (up to ``max_merge``) as one forward/backward. If a merged step fails, each
message is retried alone so that only the faulty client's call fails.
"""

from __future__ import annotations

import asyncio
import collections

import numpy as np
import ray
import torch

from raysplit.config import SplitConfig
from raysplit.observability.metrics import Recorder
from raysplit.runtime.threads import compute_thread
from raysplit.training.server import SplitServer
from raysplit.training.state import weighted_average


class Shard:
    def __init__(self, cfg: SplitConfig, shard_id: int, max_merge: int = 32, device: str = "auto") -> None:
        self.shard_id = shard_id
        self.name = f"shard{shard_id}"
        self.max_merge = max_merge
        # All torch work, the model's construction included, on one thread (compute_thread).
        self.pool = compute_thread(self.name, cfg.torch_threads or torch.get_num_threads())
        self.server = self.pool.submit(SplitServer, cfg, shard_id, device).result()
        self.queue: collections.deque = collections.deque()
        self.draining = False
        self.metrics = Recorder()
        self.merged: list[int] = []  # micro-batches per step, for tests and benchmarks
        self._dist = False

    async def ready(self) -> dict:
        return {"shard": self.shard_id, "device": str(self.server.device), "node": ray.get_runtime_context().get_node_id()}

    async def train(self, buf: bytes, lr: float) -> tuple[bytes, dict]:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((buf, lr, fut))
        self.metrics.queue_depth(self.name, len(self.queue))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _step(self, bufs: list[bytes], lr: float):
        self.server.set_lr(lr)
        return self.server.train_step(bufs)

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(self.max_merge, len(self.queue)))]
                self.metrics.queue_depth(self.name, len(self.queue))
                self.metrics.shard_batch(self.name, len(batch))
                lr = float(np.mean([b[1] for b in batch]))
                try:
                    outs, results = await self._run(self._step, [b[0] for b in batch], lr)
                    self.merged.append(len(batch))
                    for (_, _, fut), out, res in zip(batch, outs, results):
                        fut.set_result((out, res.__dict__))
                except Exception as merged_error:  # noqa: BLE001 - isolate the faulty message
                    if len(batch) == 1:
                        batch[0][2].set_exception(merged_error)
                        continue
                    for buf, lr1, fut in batch:
                        try:
                            (out,), (res,) = await self._run(self._step, [buf], lr1)
                            self.merged.append(1)
                            fut.set_result((out, res.__dict__))
                        except Exception as e:  # noqa: BLE001
                            fut.set_exception(e)
        finally:
            self.draining = False

    async def predict(self, bufs: list[bytes]) -> list[np.ndarray]:
        return await self._run(self.server.predict, bufs)

    async def state(self) -> dict[str, np.ndarray]:
        return await self._run(self.server.state)

    async def load_state(self, state: dict[str, np.ndarray]) -> None:
        await self._run(self.server.load_state, state)

    async def merge_stats(self) -> list[int]:
        return list(self.merged)

    # -- torch.distributed replica sync --------------------------------------
    async def address(self) -> tuple[str, int]:
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def _init_dist(self, addr: str, port: int, rank: int, world: int) -> str:
        import torch.distributed as dist

        backend = "nccl" if self.server.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world)
        self._dist = True
        return backend

    async def init_dist(self, addr: str, port: int, rank: int, world: int) -> str:
        return await self._run(self._init_dist, addr, port, rank, world)

    def _allreduce(self) -> None:
        import torch.distributed as dist

        world = dist.get_world_size()
        with torch.no_grad():
            for t in self.server.modules.state_dict().values():
                if t.dtype.is_floating_point:
                    dist.all_reduce(t, op=dist.ReduceOp.SUM)
                    t.div_(world)
                else:  # BatchNorm's step counters: the same rule as weighted_average
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)

    async def allreduce(self) -> None:
        """Average parameters and float buffers across replicas (a barrier: every
        shard must call it)."""
        if not self._dist:
            raise RuntimeError("init_dist was not called on this shard")
        await self._run(self._allreduce)


ShardActor = ray.remote(Shard)


def average_shards(shards: list) -> None:
    """Parameter averaging through the driver: fetch, average (numpy), push back."""
    states = ray.get([s.state.remote() for s in shards])
    avg = weighted_average(states, [1.0] * len(states))
    ray.get([s.load_state.remote(avg) for s in shards])
