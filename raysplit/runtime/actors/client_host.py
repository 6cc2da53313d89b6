"""Client actor: one process hosting one or more emulated edge clients.

Each hosted client is a :class:`~raysplit.training.loop.ClientLoop` (the same loop the
local trainer runs) on a compute thread of its own, with the Ray shard transport, the
scheduler actor and the record buffer as its seams. Compute is capped (``CpuCap``) to
emulate a weak device.

With recovery on, each client hands its shard its full state after every evaluation (its
recovery point); ``resume`` rebuilds a client that failed, from that state and the
replies the shard logged since (``runtime/recovery.py``), and runs it on.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import ray

from raysplit.config.split import SplitConfig
from raysplit.data import ArrayDataset
from raysplit.identity import Identity
from raysplit.observability.metrics import Recorder
from raysplit.runtime.actors.buffer import BufferSink
from raysplit.runtime.cpu_cap import CpuCap
from raysplit.runtime.threads import compute_thread
from raysplit.runtime.recovery import Restarted, StoreHeldScheduler, _announce, recover_client
from raysplit.runtime.points import pack
from raysplit.runtime.steplog import last_seq
from raysplit.runtime.virtual import ClientPool, run_virtual
from raysplit.training.loop import ClientLoop, ClientResult
from raysplit.training.methods import Plan
from raysplit.training.ushaped import client_half
from raysplit.transport.ray_shard import RayShardTransport


@dataclass(frozen=True)
class ClientSpec:
    """One hosted client.

    Args:
        train_x, train_y: its partition (object references, read zero-copy).
        test_x, test_y: its evaluation share.
        shard: the shard actor it trains against, and that shard's number.
        link: its place behind the emulated network (None: no link emulated).
        steps_per_epoch: its batches per epoch (where a step number falls in the data).
        key: its HMAC key (``raysplit.keys``; None: untagged messages).
    """

    train_x: object
    train_y: object
    test_x: object
    test_y: object
    shard: object
    shard_id: int
    link: object = None
    steps_per_epoch: int = 0
    key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LoopSettings:
    """What every hosted client's loop shares.

    Args:
        dataset, num_classes: the data set's name and classes.
        batch_size, seed: batching.
        t0: the run's start (time.time()).
        fail_client: test hook (client, epoch) that raises there.
        on_nonfinite: "skip" or "stop" (``ClientLoop.on_nonfinite``).
        recovery: hand the shard a recovery point after every evaluation.
    """

    dataset: str
    num_classes: int
    batch_size: int
    seed: int
    t0: float
    fail_client: tuple[int, int] | None = None
    on_nonfinite: str = "skip"
    recovery: bool = False


class _SharedCap:
    """The host's CPU cap as seen by one of its clients: pacing is serialised."""

    def __init__(self, cap: CpuCap, lock: threading.Lock) -> None:
        self.cap, self.lock = cap, lock

    def compute(self):
        return self.cap.compute()

    def pace(self) -> float:
        with self.lock:
            return self.cap.pace()


# A client hands its shard a new recovery point once this many bytes of gradient replies
# came back since its last one (and after an evaluation once they outweigh the point
# itself, ClientLoop.recovery_min_bytes): the shard's log of one
# client stays under about this size, at the price of one state (~1.8 MB for vgg_small's
# head and compressor, with momentum) per this many bytes.
RECOVERY_BYTES = 8 << 20


def _hand_in_point(store, shard, shard_id: int, client: int, state: dict) -> None:
    """Hand ``client``'s recovery point to its shard, the state held once by the state store
    (``runtime/points.py``); nothing waits for it."""
    seq = last_seq(state)
    held = state if store is None else store.keep_point.remote(shard_id, client, seq, pack(state))
    shard.recovery_point.remote(client, held, seq)


class ClientHost:
    """Args:
    split: the split network (its torch_threads: each client's threads).
    plan: the run's plan.
    clients: {client id: ClientSpec} hosted here.
    scheduler, buffer: the scheduler and record buffer actors.
    identity: the run's identity.
    settings: what the loops share.
    cpu_cap, cap_mechanism: see ``CpuCap`` (per client: a host of k clients gets k times the cap).
    materialise: virtual clients: at most this many hosted clients are materialised at once, the
        others parked as numpy (``runtime/virtual.py``); None = every client stays materialised.
    """

    def __init__(self, split: SplitConfig, plan: Plan, clients: dict[int, ClientSpec], scheduler, buffer,
                 identity: Identity, settings: LoopSettings, cpu_cap: float | None = None,
                 cap_mechanism: str = "auto", store=None, materialise: int | None = None) -> None:
        self.ids = sorted(clients)
        cap = None if cpu_cap is None else cpu_cap * len(self.ids)
        self.cap = CpuCap(cap, cap_mechanism, name=identity.cgroup_name(f"c{self.ids[0]}"),
                          per_thread=len(self.ids) > 1)
        self.shared_cap = _SharedCap(self.cap, threading.Lock())
        self.split, self.plan, self.identity, self.settings, self.specs = split, plan, identity, settings, clients
        self.sink, self.metrics = BufferSink(buffer), Recorder()
        self.sched = StoreHeldScheduler(scheduler, store)
        self.store = store
        threads = split.torch_threads or 1
        self.pool = None
        if materialise is not None and materialise < len(self.ids):
            self.pool = ClientPool(self._make_client, self.ids, materialise, threads, settings.seed,
                                   name=f"host{self.ids[0]}", on_load=self._own_key)
        # Each client's torch work runs on a thread of its own (see compute_thread).
        self.compute = {} if self.pool else {c: compute_thread(f"client{c}", threads) for c in self.ids}
        self.data = {}
        for c, spec in clients.items():
            n = settings.num_classes
            self.data[c] = (ArrayDataset(settings.dataset, ray.get(spec.train_x), ray.get(spec.train_y), n),
                            ArrayDataset(settings.dataset, ray.get(spec.test_x), ray.get(spec.test_y), n))
        if self.pool is not None:  # virtual clients: a loop each, a client half per slot
            self.loops: dict[int, ClientLoop] = {c: self._make_loop(c, virtual=True) for c in self.ids}
        else:
            self.loops = {c: self.compute[c].submit(self._make_loop, c).result() for c in self.ids}

    def _make_client(self, c: int):
        return client_half(self.split, c, tenant_key=self.identity.tenant_key, key=self.specs[c].key)

    def _own_key(self, client, c: int) -> None:
        """A slot materialising client ``c`` signs with ``c``'s key."""
        client.key = client.grad_key = self.specs[c].key

    def _make_loop(self, c: int, virtual: bool = False) -> ClientLoop:
        """A fresh client and its loop (on its compute thread); a virtual client's loop gets
        its client half from a slot for each directive."""
        spec, st = self.specs[c], self.settings
        client = None if virtual else self._make_client(c)
        train, test = self.data[c]
        fail = st.fail_client[1] if st.fail_client and st.fail_client[0] == c else None
        point = partial(_hand_in_point, self.store, spec.shard, spec.shard_id, c) if st.recovery else None
        transport = RayShardTransport(spec.shard)
        if spec.link is not None:  # an EmulatedLink (raysplit.transport.emulated)
            transport = spec.link.wrap(transport, c)
        return ClientLoop(
            client=client, train=train, test=test, plan=self.plan, transport=transport,
            scheduler=self.sched, sink=self.sink, identity=self.identity, shard=spec.shard_id,
            batch_size=st.batch_size, seed=st.seed, t0=st.t0, cap=self.shared_cap, metrics=self.metrics,
            fail_at_epoch=fail, on_nonfinite=st.on_nonfinite, recovery_point=point,
            recovery_bytes=RECOVERY_BYTES if st.recovery else 0,
            # a point after an evaluation once the log it trims outweighs it (not with an
            # emulated link: its clock is in the point, not in the log)
            recovery_min_bytes=None if spec.link is None else 0,
        )

    def ready(self) -> dict:
        return {"pid": os.getpid(), "clients": self.ids, "cap": self.cap.mechanism,
                "node": ray.get_runtime_context().get_node_id()}

    def _on(self, client: int, fn, *args):
        """Run ``fn(*args)`` on ``client``'s compute thread (a virtual client: on a slot,
        materialised for the call) and wait for it."""
        if client not in self.loops:
            raise KeyError(f"client {client} is not hosted here (hosted: {self.ids})")
        if self.pool is not None:
            with self.pool.materialised(client) as slot:
                self.loops[client].client = slot.client
                try:
                    return slot.call(fn, *args)
                finally:
                    self.loops[client].client = None
        return self.compute[client].submit(fn, *args).result()

    def run(self, client: int) -> ClientResult:
        """Walk the schedule with this client until it is done."""
        if self.pool is None:
            return self._on(client, self.loops[client].run)
        link = self.specs[client].link  # under the virtual clock a step settles with no slot held
        return run_virtual(self.pool, self.loops[client], client,
                           settle_off_slot=link is not None and link.mode == "virtual")

    def virtual_stats(self) -> dict | None:
        return None if self.pool is None else self.pool.stats().to_dict()

    def _recover(self, c: int) -> Restarted:
        t0 = time.perf_counter()
        loop = self._make_loop(c)
        loop.fail_at_epoch = None  # the test hook fires once
        spec = self.specs[c]
        detail, replayed = recover_client(loop, spec.shard, spec.steps_per_epoch)
        self.loops[c] = loop
        return Restarted("client", c, time.perf_counter() - t0, detail, replayed, loop.client.step)

    def _recover_virtual(self, c: int) -> Restarted:
        """``_recover`` for a virtual client: on a slot that starts from the fresh state; the
        recovered state is what the client parks."""
        t0 = time.perf_counter()
        with self.pool.materialised(c, fresh=True) as slot:
            loop = self._make_loop(c, virtual=True)
            loop.fail_at_epoch = None
            loop.client = slot.client
            spec = self.specs[c]
            try:
                detail, replayed = slot.call(recover_client, loop, spec.shard, spec.steps_per_epoch)
                step = slot.client.step
            finally:
                loop.client = None
        self.loops[c] = loop
        return Restarted("client", c, time.perf_counter() - t0, detail, replayed, step)

    def resume(self, client: int, announce: bool = True) -> ClientResult:
        """After a failure (or in a resumed run): rebuild the client from its recovery point
        and its shard's step log, then walk the rest of the schedule."""
        if self.pool is not None:
            event = self._recover_virtual(client)
        else:
            event = self._on(client, self._recover, client)
        if announce:
            _announce(self.sink.buffer, event)
        return self.run(client)

    def state_dict(self, client: int) -> dict:
        return self._on(client, self.loops[client].state_dict)

    def load_state_dict(self, client: int, state: dict) -> None:
        self._on(client, self.loops[client].load_state_dict, state)

    def modules_state(self, client: int) -> dict:
        return self._on(client, lambda: self.loops[client].client.modules_state())

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
        if self.pool is not None:
            self.pool.shutdown()



ClientActor = ray.remote(ClientHost)
