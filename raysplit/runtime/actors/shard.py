"""Server shard actor: a replica of the tail that merges clients' micro-batches.

The actor is async: ``train`` calls from many clients queue up while the previous merged
step computes on the shard's single compute thread, and the next step takes everything
of one phase that arrived (up to ``max_merge``) as one forward/backward. If a merged
step fails, each message is retried alone so that only the faulty client's call fails.
"""

from __future__ import annotations

import asyncio
import collections
import time

import numpy as np
import ray
import torch

from raysplit.config.split import SplitConfig
from raysplit.identity import Identity
from raysplit.observability.metrics import Recorder
from raysplit.runtime.threads import compute_thread
from raysplit.training.methods import Plan
from raysplit.training.server import SplitServer
from raysplit.transport.base import Reply


class Shard:
    """Args:
    cfg: the split network (its torch_threads: this shard's threads).
    plan: the run's plan (a message's phase selects the server's stage).
    shard_id: this replica's number.
    identity: the run's identity (tenant key on the wire, metric tags).
    max_merge: most micro-batches merged into one step.
    device: "auto", "cpu" or "cuda".
    cuts: None: the tail after ``cfg.split_layer``; cuts: the whole model, each message
        starting from its own cut (``SplitServer``).
    """

    def __init__(self, cfg: SplitConfig, plan: Plan | None, shard_id: int, identity: Identity, max_merge: int = 32,
                 device: str = "auto", cuts: tuple[int, ...] | None = None) -> None:
        self.shard_id = shard_id
        self.name = str(shard_id)
        self.identity = identity
        self.max_merge = max_merge
        # All torch work, the model's construction included, on one thread (compute_thread).
        self.pool = compute_thread(f"shard{shard_id}", cfg.torch_threads or torch.get_num_threads())
        self.server = self.pool.submit(
            SplitServer, cfg, shard_id, device, plan=plan, tenant_key=identity.tenant_key, cuts=cuts
        ).result()
        self.queue: collections.deque = collections.deque()
        self.draining = False
        self.metrics = Recorder()
        self.merged: list[int] = []  # micro-batches per step, for the summary
        self._dist = False

    async def ready(self) -> dict:
        return {"shard": self.shard_id, "device": str(self.server.device), "node": ray.get_runtime_context().get_node_id()}

    async def train(self, buf: bytes, lr: float, phase: int) -> Reply:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((buf, lr, phase, fut, time.perf_counter()))
        self.metrics.queue_depth(self.name, len(self.queue), tenant=self.identity.tenant)
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _take(self) -> list:
        """The oldest message and the ones behind it of the same phase, up to max_merge."""
        phase = self.queue[0][2]
        batch, rest = [], collections.deque()
        while self.queue and len(batch) < self.max_merge:
            item = self.queue.popleft()
            (batch if item[2] == phase else rest).append(item)
        rest.extend(self.queue)
        self.queue = rest
        return batch

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch = self._take()
                self.metrics.queue_depth(self.name, len(self.queue), tenant=self.identity.tenant)
                self.metrics.shard_batch(self.name, len(batch), tenant=self.identity.tenant)
                lr = float(np.mean([b[1] for b in batch]))
                started = time.perf_counter()
                try:
                    results = await self._run(self.server.train_step, [b[0] for b in batch], lr, batch[0][2])
                    self.merged.append(len(batch))
                    for (_, _, _, fut, queued), res in zip(batch, results):
                        fut.set_result(Reply(res, started - queued))
                except Exception as merged_error:  # noqa: BLE001 - isolate the faulty message
                    if len(batch) == 1:
                        batch[0][3].set_exception(merged_error)
                        continue
                    for buf, lr1, phase, fut, queued in batch:
                        try:
                            started = time.perf_counter()
                            (res,) = await self._run(self.server.train_step, [buf], lr1, phase)
                            self.merged.append(1)
                            fut.set_result(Reply(res, started - queued))
                        except Exception as e:  # noqa: BLE001
                            fut.set_exception(e)
        finally:
            self.draining = False

    async def predict(self, buf: bytes) -> np.ndarray:
        (pred,) = await self._run(self.server.predict, [buf])
        return pred

    # -- state ------------------------------------------------------------------
    async def modules_state(self) -> dict[str, np.ndarray]:
        return await self._run(self.server.modules_state)

    async def load_modules_state(self, state: dict[str, np.ndarray]) -> None:
        await self._run(self.server.load_modules_state, state)

    async def state_dict(self) -> dict:
        return await self._run(self.server.state_dict)

    async def load_state_dict(self, state: dict) -> None:
        await self._run(self.server.load_state_dict, state)

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
