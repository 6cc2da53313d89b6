"""Client actor: one process hosting one or more emulated edge clients.

Each hosted client is a :class:`~raysplit.training.loop.ClientLoop` (the same loop the
local trainer runs) on a compute thread of its own, with the Ray shard transport, the
scheduler actor and the record buffer as its seams. Compute is capped (``CpuCap``) to
emulate a weak device.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import ray

from raysplit.config.split import SplitConfig
from raysplit.data import ArrayDataset
from raysplit.identity import Identity
from raysplit.observability.metrics import Recorder
from raysplit.runtime.actors.buffer import BufferSink
from raysplit.runtime.cpu_cap import CpuCap
from raysplit.runtime.threads import compute_thread
from raysplit.training.client import SplitClient
from raysplit.training.loop import ClientLoop, ClientResult, Report
from raysplit.training.methods import Plan
from raysplit.transport.ray_shard import RayShardTransport


@dataclass(frozen=True)
class ClientSpec:
    """One hosted client.

    Args:
        train_x, train_y: its partition (object references, read zero-copy).
        test_x, test_y: its evaluation share.
        shard: the shard actor it trains against, and that shard's number.
        link: its place behind the emulated network (None: no link emulated).
    """

    train_x: object
    train_y: object
    test_x: object
    test_y: object
    shard: object
    shard_id: int
    link: object = None


@dataclass(frozen=True)
class LoopSettings:
    """What every hosted client's loop shares.

    Args:
        dataset, num_classes: the data set's name and classes.
        batch_size, seed: batching.
        t0: the run's start (time.time()).
        fail_client: test hook (client, epoch) that raises there.
    """

    dataset: str
    num_classes: int
    batch_size: int
    seed: int
    t0: float
    fail_client: tuple[int, int] | None = None


class RemoteScheduler:
    """The scheduler actor as a loop's ``Scheduler``: a blocking call."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def next(self, client: int, report: Report | None):
        return ray.get(self.handle.next.remote(client, report))


class _SharedCap:
    """The host's CPU cap as seen by one of its clients: pacing is serialised."""

    def __init__(self, cap: CpuCap, lock: threading.Lock) -> None:
        self.cap, self.lock = cap, lock

    def compute(self):
        return self.cap.compute()

    def pace(self) -> float:
        with self.lock:
            return self.cap.pace()


class ClientHost:
    """Args:
    split: the split network (its torch_threads: each client's threads).
    plan: the run's plan.
    clients: {client id: ClientSpec} hosted here.
    scheduler, buffer: the scheduler and record buffer actors.
    identity: the run's identity.
    settings: what the loops share.
    cpu_cap, cap_mechanism: see ``CpuCap`` (per client: a host of k clients gets k times the cap).
    """

    def __init__(self, split: SplitConfig, plan: Plan, clients: dict[int, ClientSpec], scheduler, buffer,
                 identity: Identity, settings: LoopSettings, cpu_cap: float | None = None,
                 cap_mechanism: str = "auto") -> None:
        self.ids = sorted(clients)
        cap = None if cpu_cap is None else cpu_cap * len(self.ids)
        self.cap = CpuCap(cap, cap_mechanism, name=identity.cgroup_name(f"c{self.ids[0]}"),
                          per_thread=len(self.ids) > 1)
        shared = _SharedCap(self.cap, threading.Lock())
        sink, sched, metrics = BufferSink(buffer), RemoteScheduler(scheduler), Recorder()
        # Each client's torch work runs on a thread of its own (see compute_thread).
        self.compute = {c: compute_thread(f"client{c}", split.torch_threads or 1) for c in self.ids}
        self.loops: dict[int, ClientLoop] = {}
        for c, spec in clients.items():
            client = self.compute[c].submit(SplitClient, split, c, tenant_key=identity.tenant_key).result()
            train = ArrayDataset(settings.dataset, ray.get(spec.train_x), ray.get(spec.train_y), settings.num_classes)
            test = ArrayDataset(settings.dataset, ray.get(spec.test_x), ray.get(spec.test_y), settings.num_classes)
            fail = settings.fail_client[1] if settings.fail_client and settings.fail_client[0] == c else None
            transport = RayShardTransport(spec.shard)
            if spec.link is not None:  # an EmulatedLink (raysplit.transport.emulated)
                transport = spec.link.wrap(transport, c)
            self.loops[c] = ClientLoop(
                client=client, train=train, test=test, plan=plan, transport=transport,
                scheduler=sched, sink=sink, identity=identity, shard=spec.shard_id,
                batch_size=settings.batch_size, seed=settings.seed,
                t0=settings.t0, cap=shared, metrics=metrics, fail_at_epoch=fail,
            )

    def ready(self) -> dict:
        return {"pid": os.getpid(), "clients": self.ids, "cap": self.cap.mechanism,
                "node": ray.get_runtime_context().get_node_id()}

    def _on(self, client: int, fn, *args):
        """Run ``fn(*args)`` on ``client``'s compute thread and wait for it."""
        if client not in self.compute:
            raise KeyError(f"client {client} is not hosted here (hosted: {self.ids})")
        return self.compute[client].submit(fn, *args).result()

    def run(self, client: int) -> ClientResult:
        """Walk the schedule with this client until it is done."""
        return self._on(client, self.loops[client].run)

    def state_dict(self, client: int) -> dict:
        return self._on(client, self.loops[client].state_dict)

    def load_state_dict(self, client: int, state: dict) -> None:
        self._on(client, self.loops[client].load_state_dict, state)

    def modules_state(self, client: int) -> dict:
        return self._on(client, self.loops[client].client.modules_state)

    def cap_info(self) -> dict:
        t = self.cap.throttle
        return {
            "mechanism": self.cap.mechanism,
            "cpu_seconds": None if t is None else t.cpu,
            "slept_seconds": None if t is None else t.slept,
            "process_cpu_seconds": time.process_time(),
        }

    def shutdown(self) -> None:
        self.cap.release()
        for pool in self.compute.values():
            pool.shutdown(wait=False)


ClientActor = ray.remote(ClientHost)
