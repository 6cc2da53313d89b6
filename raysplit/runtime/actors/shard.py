"""Server shard actor: a replica of the tail that merges clients' micro-batches.

The actor is async: ``train`` calls from many clients queue up while the previous merged
step computes on the shard's single compute thread, and the next step takes everything
of one phase that arrived (up to ``max_merge``) as one forward/backward. If a merged
step fails, each message is retried alone so that only the faulty client's call fails
(a failed step changes nothing, so the retry cannot apply anything twice).

Before a message queues it is admitted (``runtime/admission.py``: size, header, client,
step); a refused message is counted (``raysplit_rejected_messages``) and only its caller
gets the error. Steps are idempotent: each applied step is recorded in the shard's
``StepLog``, so a retried step gets its first reply. With recovery on, the log also keeps
the replies since each client's recovery point (the point held once by the state store, the
shard keeping its step: ``runtime/points.py``); a restarted
client rebuilds itself from both, and a restarted shard reloads its last snapshot from
the state store and copies a live replica's modules (``runtime/recovery.py``).
"""

from __future__ import annotations

import asyncio
import collections
import os
import time

import numpy as np
import ray
import torch

from raysplit.config.split import SplitConfig
from raysplit.identity import Identity
from raysplit.observability.metrics import Recorder
from raysplit.runtime.admission import admit, server_max_bytes
from raysplit.runtime.points import RecoveryPoints
from raysplit.runtime.recovery import restore_shard
from raysplit.runtime.steplog import StepLog, last_seq
from raysplit.runtime.threads import compute_thread
from raysplit.serving.coalesce import Coalescer
from raysplit.training.guards import Refused
from raysplit.training.methods import Plan
from raysplit.training.ushaped import server_half
from raysplit.transport.base import Reply


class _Predictions:
    """A shard's tail as the ``Coalescer``'s target: one batch of evaluation messages on the
    compute thread, one prediction (or the error it raised) per message."""

    def __init__(self, shard: "Shard") -> None:
        self.shard = shard

    async def infer_many_async(self, bufs: list[bytes]) -> list:
        return await self.shard._run(self.shard._predict_each, bufs)


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
    clients: the client ids it serves (None: any); others' messages are refused.
    max_batch: the run's batch size: larger messages are refused unread.
    recovery: keep every step's reply since each client's recovery point (else only the last).
    store, buffer: the state store (a restarted shard reloads its snapshot from it) and the
        record buffer (where it announces its restart).
    keyring: the tenant's keys (``raysplit.keys.Keyring``): messages without their client's
        tag are refused.
    """

    def __init__(self, cfg: SplitConfig, plan: Plan | None, shard_id: int, identity: Identity, max_merge: int = 32,
                 device: str = "auto", cuts: tuple[int, ...] | None = None, *, clients: list[int] | None = None,
                 max_batch: int | None = None, recovery: bool = False, store=None, buffer=None,
                 keyring=None) -> None:
        t0 = time.perf_counter()
        self.shard_id = shard_id
        self.name = str(shard_id)
        self.identity = identity
        self.max_merge = max_merge
        # All torch work, the model's construction included, on one thread (compute_thread).
        self.pool = compute_thread(f"shard{shard_id}", cfg.torch_threads or torch.get_num_threads())
        self.server = self.pool.submit(
            server_half, cfg, shard_id, device, plan=plan, tenant_key=identity.tenant_key, keyring=keyring,
            **({} if cuts is None else {"cuts": cuts}),
        ).result()
        self.queue: collections.deque = collections.deque()
        self.draining = False
        self.metrics = Recorder()
        self.merged: list[int] = []  # micro-batches per step, for the summary
        self._dist = False
        self.clients = None if clients is None else frozenset(int(c) for c in clients)
        self.max_bytes = server_max_bytes(self.server, max_batch or 4096)
        self.log = StepLog(keep=recovery)
        self.points = RecoveryPoints(store, shard_id)  # clients' last recovery points (held by the store)
        self.inflight: dict[tuple[int, int], asyncio.Future] = {}
        self.rejected: collections.Counter = collections.Counter()
        # evaluation messages gather while the compute thread is busy (one batch in flight)
        self.predictions = Coalescer(_Predictions(self), max_batch=max_merge, wait_s=0.0, max_in_flight=1)
        if store is not None and _reconstructed():
            restore_shard(self, store, buffer, t0)

    async def ready(self) -> dict:
        return {"shard": self.shard_id, "device": str(self.server.device), "node": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}

    async def train(self, buf: bytes, lr: float, phase: int) -> Reply:
        try:
            ticket = admit(buf, max_bytes=self.max_bytes, clients=self.clients, log=self.log, kinds=self.server.kinds)
        except Refused as e:
            self._refused(e)
            raise
        key = (ticket.client, ticket.step)
        if ticket.cached is not None or key in self.inflight:  # a retry: never applied twice
            try:
                self.server.verify(buf)  # only an authentic message gets a logged reply
            except Refused as e:
                self._refused(e)
                raise
            self.metrics.duplicate(self.name, tenant=self.identity.tenant)
            return ticket.cached if ticket.cached is not None else await asyncio.shield(self.inflight[key])
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut
        self.queue.append((buf, lr, phase, fut, time.perf_counter()))
        self.metrics.queue_depth(self.name, len(self.queue), tenant=self.identity.tenant)
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        try:
            reply = await asyncio.shield(fut)
        finally:
            self.inflight.pop(key, None)
        return reply

    def _refused(self, e: Refused) -> None:
        self.rejected[e.reason] += 1
        self.metrics.rejected(self.name, e.reason, tenant=self.identity.tenant)

    def _step(self, items: list, lr: float, phase: int) -> list[Reply]:
        """One server step over ``items`` (buf, lr, phase, future, queued), on the compute
        thread; every applied step goes into the step log in the same breath, so the log
        always matches the tail's state (the log is only touched on this thread)."""
        started = time.perf_counter()
        results = self.server.train_step([it[0] for it in items], lr, phase)
        replies = [Reply(res, started - it[4]) for it, res in zip(items, results)]
        for r in replies:
            self.log.record(r.result.client_id, r.result.step, r)
        return replies

    def _fail(self, fut: asyncio.Future, error: BaseException) -> None:
        if isinstance(error, Refused):
            self._refused(error)
        fut.set_exception(error)

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
                try:
                    replies = await self._run(self._step, batch, lr, batch[0][2])
                    self.merged.append(len(batch))
                    for item, reply in zip(batch, replies):
                        item[3].set_result(reply)
                except Exception as merged_error:  # noqa: BLE001 - isolate the faulty message
                    if len(batch) == 1:
                        self._fail(batch[0][3], merged_error)
                        continue
                    for item in batch:
                        try:
                            (reply,) = await self._run(self._step, [item], item[1], item[2])
                            self.merged.append(1)
                            item[3].set_result(reply)
                        except Exception as e:  # noqa: BLE001
                            self._fail(item[3], e)
        finally:
            self.draining = False

    async def predict(self, buf: bytes) -> np.ndarray:
        """Class predictions for one evaluation message. The predictions that arrive while
        the compute thread is busy run as one batch when it is free (a thousand virtual
        clients evaluate a test image or two each at the same barrier: one by one, the
        tail's fixed cost per call made evaluation cost as much as training); a message
        that fails in a batch fails alone."""
        answer = await self.predictions.infer_async(buf)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _predict_each(self, bufs: list[bytes]) -> list:
        try:
            return self.server.predict(bufs)
        except Exception:  # noqa: BLE001 - isolate the faulty message
            if len(bufs) == 1:
                raise
        out: list = []
        for b in bufs:
            try:
                out.extend(self.server.predict([b]))
            except Exception as e:  # noqa: BLE001 - its caller gets it
                out.append(e)
        return out

    # -- state ------------------------------------------------------------------
    async def modules_state(self) -> dict[str, np.ndarray]:
        return await self._run(self.server.modules_state)

    async def load_modules_state(self, state: dict[str, np.ndarray]) -> None:
        await self._run(self.server.load_modules_state, state)

    def _state(self, full: bool = True) -> dict:
        state = {**self.server.state_dict(), "log": self.log.state_dict(), "points": dict(self.points.seqs)}
        if full:  # a checkpoint: the clients' states themselves
            state["recovery"] = self.points.states()
        return state

    def _load(self, state: dict) -> None:
        self.server.load_state_dict(state)
        if "log" in state:
            self.log.load_state_dict(state["log"])
        self.points = RecoveryPoints(self.points.store, self.shard_id)
        self.points.load_states(state.get("recovery", {}), last_seq)  # a checkpoint's (by value)
        self.points.load_from_store()  # a snapshot's (held by the store; possibly newer)
        for c, seq in self.points.seqs.items():  # a point newer than the snapshot: its steps are behind the client
            self.log.forget(c, seq)
            self.log.last[c] = max(self.log.last.get(c, 0), seq)

    async def state_dict(self) -> dict:
        """The server half's full state, the step log and the clients' recovery points."""
        return await self._run(self._state)

    async def load_state_dict(self, state: dict) -> None:
        await self._run(self._load, state)

    # -- recovery -------------------------------------------------------------------
    def _recovery_point(self, client: int, seq: int, state) -> None:
        if self.points.set(client, seq, state):
            self.log.forget(client, seq)

    async def recovery_point(self, client: int, state, seq: int | None = None) -> None:
        """Take ``client``'s recovery point (after an evaluation): its loop state, or the
        state store's ``Held`` answer (``StateStore.keep_point``) with the point's ``seq``;
        drop its logged replies up to that step (on the compute thread, in order with the
        steps)."""
        seq = last_seq(state) if seq is None else int(seq)
        await self._run(self._recovery_point, int(client), seq, state)

    async def recovery(self, client: int) -> tuple[dict | None, list]:
        """What a restarted client rebuilds itself from: its last recovery state (None:
        none yet, start from the initial one) and the replies logged since."""
        def read():
            point = self.points.get(client)
            if point is None:
                return None, self.log.since(client, 0)
            return point[1], self.log.since(client, point[0])

        return await self._run(read)

    async def snapshot(self, store) -> int:
        """Put this shard's state in the state store (what a restart reloads): the tail,
        the step log and its clients' recovery points' steps (the points themselves are in
        the store already, once each); returns the bytes of logged replies it holds."""
        state = await self._run(self._state, False)
        await store.put.remote(("shard", self.shard_id), state)
        return self.log.nbytes()

    async def refusals(self) -> dict[str, int]:
        return dict(self.rejected)

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


def _reconstructed() -> bool:
    """Whether this actor is a restart of one that died (Ray re-ran its constructor)."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - outside Ray (tests build the class directly)
        return False


ShardActor = ray.remote(Shard)
