"""Virtual clients: many logical clients multiplexed on a few materialised ones.

Flower's virtual client engine materialises a client only while it runs; this does the
same for the client half of split learning inside one actor process. The process holds
``slots`` real :class:`~raysplit.training.client.SplitClient` objects (torch modules,
optimizer, each on a compute thread of its own) and, for every hosted client, a
:class:`Parked` state: head and compression module weights, momentum buffers, budget,
step count and RNG state as numpy arrays, plus its stage (objectives, frozen groups).
The loop's own position in the data (epoch, batch, directive number, samples) stays in
the client's :class:`~raysplit.training.loop.ClientLoop`, which is a few numbers.

A client is materialised for one directive (a training segment, an aggregation, an
evaluation): a free slot loads its parked state, runs the directive on the slot's
compute thread, and parks the state again. Between directives (waiting at a barrier,
not selected this round) a client holds no slot, so ``slots`` bounds the torch work in
flight, not the number of clients.

What is shared, not copied per client:

* a client that never trained holds no arrays: it is the host's fresh state (every
  process builds the same weights from the seed) with its own RNG stream;
* after a SplitFed evaluation a client's modules *are* the round's average: it parks a
  reference to the one averaged state of this host (broadcast once per round).

Parking and loading are exact (``tests/test_virtual.py``): a client that trains in
pieces on shared slots computes bit for bit what a client that stays materialised does.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from raysplit.budget.policies import DONE, EVALUATE, TRAIN
from raysplit.runtime.threads import compute_thread
from raysplit.training.client import SplitClient
from raysplit.training.loop import ClientLoop, ClientResult, Report, Steps, resolve_state
from raysplit.training.state import PrivateRng, load_numpy_state

#: ClusterConfig.materialise: every hosted client stays materialised (no virtual clients).
ALL = "all"


@dataclass
class Parked:
    """An idle client's state, as numpy.

    Args:
        modules: head + compression module state (may be shared: fresh weights, an average).
        momentum: the optimizer's momentum buffers by parameter index.
        param_groups: the optimizer's hyper-parameters (learning rate, ...), no tensors.
        budget, step: the client half's budget and step counter.
        rng: its private torch generator state (None without dropout).
        regularizers, frozen: its stage (set when it entered its phase).
    """

    modules: dict[str, np.ndarray]
    momentum: dict[int, np.ndarray]
    param_groups: list[dict] | None
    budget: int
    step: int
    rng: np.ndarray | None
    regularizers: list
    frozen: tuple[str, ...]

    def private_bytes(self, shared: dict[str, np.ndarray] | None = None) -> int:
        """Bytes held for this client alone (``modules`` not counted when it is ``shared``)."""
        n = sum(v.nbytes for v in self.momentum.values())
        if self.rng is not None:
            n += self.rng.nbytes
        if self.modules is not shared:
            n += sum(np.asarray(v).nbytes for v in self.modules.values())
        return n


def park(client: SplitClient) -> Parked:
    """The client half's state as numpy (copies: the slot goes on to other clients)."""
    if client._pending is not None:
        raise RuntimeError(f"client {client.client_id}: cannot park while step {client._pending[0]} awaits its gradient")
    s = client.state_dict()
    opt = s["optimizer"]
    return Parked(
        modules={k: v.numpy() for k, v in s["modules"].items()},
        momentum={} if opt is None else {int(i): st["momentum_buffer"].numpy() for i, st in opt["state"].items()},
        param_groups=None if opt is None else [dict(g) for g in opt["param_groups"]],
        budget=s["budget"], step=s["step"], rng=None if s["rng"] is None else s["rng"].numpy(),
        regularizers=list(client.regularizers), frozen=tuple(client.frozen),
    )


def load(client: SplitClient, client_id: int, p: Parked) -> None:
    """Make ``client`` (a slot) be client ``client_id`` in state ``p``."""
    client.abort_step()
    client.client_id = int(client_id)
    load_numpy_state(client.modules, p.modules)
    if client.opt is not None:
        client.opt.load_state_dict({
            "state": {i: {"momentum_buffer": torch.from_numpy(b)} for i, b in p.momentum.items()},
            "param_groups": p.param_groups,
        })
    client.set_budget(p.budget)
    client.step = p.step
    client.rng.load_state_dict(None if p.rng is None else torch.from_numpy(p.rng))
    client.regularizers, client.frozen = list(p.regularizers), tuple(p.frozen)
    for name, module in client.groups.items():
        module.requires_grad_(name not in client.frozen)


@dataclass
class Slot:
    """One materialised client: a SplitClient on its compute thread."""

    index: int
    client: SplitClient
    thread: Any  # a single-thread executor (runtime.threads.compute_thread)

    def call(self, fn: Callable, *args):
        return self.thread.submit(fn, *args).result()


@dataclass
class VirtualStats:
    """What virtual hosting cost, for the summary (``ClientPool.stats``)."""

    slots: int
    clients: int
    materialisations: int
    materialise_s: float
    park_s: float
    parked_bytes: int
    shared_bytes: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class ClientPool:
    """``slots`` materialised clients shared by ``ids``.

    Args:
        make: builds a SplitClient for a client id (called once per slot, on its thread).
        ids: the hosted clients.
        slots: how many are materialised at once (1..len(ids)).
        threads: torch threads of each slot's compute thread.
        seed: the run's seed (each client's RNG stream: seed * 1000 + id, as SplitClient).
        name: thread name prefix.
        on_load: called with (slot's client, client id) after each load (per-client keys).
    """

    def __init__(self, make: Callable[[int], SplitClient], ids: list[int], slots: int, threads: int, seed: int,
                 name: str = "client", on_load: Callable[[SplitClient, int], None] | None = None) -> None:
        if not 1 <= slots <= len(ids):
            raise ValueError(f"slots must be in 1..{len(ids)} (the hosted clients), got {slots}")
        self.ids, self.seed, self.on_load = list(ids), seed, on_load
        self.free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self.slots = []
        for k in range(slots):
            ex = compute_thread(f"{name}-slot{k}", threads)
            self.slots.append(Slot(k, ex.submit(make, ids[k]).result(), ex))
        for s in self.slots:
            self.free.put(s)
        first = self.slots[0].client
        self.fresh = park(first)  # modules, budget, stage of a client that has not trained
        self.dropout = first.rng.enabled
        self.parked: dict[int, Parked] = {}
        self.shared: tuple[Any, dict] | None = None  # (object ref, its arrays): the last average
        self._lock = threading.Lock()
        self.n = 0
        self.t_load = self.t_park = 0.0

    def _state_of(self, c: int, fresh: bool = False) -> Parked:
        p = None if fresh else self.parked.get(c)
        if p is not None:
            return p
        rng = PrivateRng(self.seed * 1000 + c, self.dropout).state_dict()
        return Parked(**{**self.fresh.__dict__, "rng": None if rng is None else rng.numpy()})

    def shared_state(self, ref: Any, resolve: Callable[[Any], dict]) -> dict:
        """The arrays of an averaged state, fetched once per host (the newest one kept)."""
        with self._lock:
            if self.shared is None or not (self.shared[0] is ref or _is_ref(ref) and self.shared[0] == ref):
                self.shared = (ref, resolve(ref))
            return self.shared[1]

    @contextmanager
    def materialised(self, c: int, *, modules: dict | None = None, fresh: bool = False) -> Iterator[Slot]:
        """Client ``c`` on a free slot for the ``with`` block, parked again after it.

        ``modules``: what the client's modules equal after the block (the average it loads
        for a SplitFed evaluation), parked by reference instead of copied. A block that
        raises parks nothing: the client keeps its state from before (the caller drops a
        failed client). ``fresh``: load the state of a client that never trained (a recovery
        rebuilds from there)."""
        if c not in self.ids:
            raise KeyError(f"client {c} is not hosted here (hosted: {self.ids[:8]}{'...' if len(self.ids) > 8 else ''})")
        slot = self.free.get()
        try:
            t0 = time.perf_counter()
            slot.call(load, slot.client, c, self._state_of(c, fresh))
            if self.on_load is not None:
                self.on_load(slot.client, c)
            t1 = time.perf_counter()
            yield slot
            t2 = time.perf_counter()
            p = slot.call(park, slot.client)
            if modules is not None:
                p.modules = modules
            self.parked[c] = p
            with self._lock:
                self.n += 1
                self.t_load += t1 - t0
                self.t_park += time.perf_counter() - t2
        except BaseException:
            slot.client.abort_step()
            raise
        finally:
            self.free.put(slot)

    def stats(self) -> VirtualStats:
        shared = self.shared[1] if self.shared else None
        parked = sum(p.private_bytes(shared) for p in self.parked.values())
        held = [self.fresh.modules] + ([shared] if shared is not None else [])
        return VirtualStats(len(self.slots), len(self.ids), self.n, self.t_load, self.t_park, parked,
                            sum(np.asarray(v).nbytes for m in held for v in m.values()))

    def shutdown(self) -> None:
        for s in self.slots:
            s.thread.shutdown(wait=False)


def run_virtual(pool: ClientPool, loop: ClientLoop, c: int, settle_off_slot: bool = False) -> ClientResult:
    """``ClientLoop.run`` for a virtual client: it asks the scheduler for a directive
    holding no slot (a barrier can keep it waiting as long as it likes), and is
    materialised on a free slot for that directive only.

    ``settle_off_slot`` (the emulated network's virtual clock): a training directive is
    materialised once per step, and each step is settled on the clock with no slot held.
    The clock settles a step only once no client can still act before it (the
    conservative rule of ``raysplit.link.medium``); a client parked waiting for a slot is
    such a client, so a client that waited for the medium while holding its slot could
    hold back the very client the medium waits for (with every slot taken, the run would
    hang at its first step)."""
    report: Report | None = None
    try:
        while True:
            d = loop.scheduler.next(c, report)
            if d.kind == DONE:
                break
            if settle_off_slot and d.kind == TRAIN:
                report = _settled_off_slot(pool, loop, c, d)
                continue
            avg = None
            if d.kind == EVALUATE and d.load_state is not None:
                avg = pool.shared_state(d.load_state, resolve_state)
                d = dataclasses.replace(d, load_state=avg)
            with pool.materialised(c, modules=avg) as slot:
                loop.client = slot.client
                try:
                    report = slot.call(loop.do, d)
                finally:
                    loop.client = None
    finally:
        loop.transport.close()  # as ClientLoop.run: a done client no longer holds the clock back
    with pool.materialised(c) as slot:
        loop.client = slot.client
        try:
            return slot.call(loop.result)
        finally:
            loop.client = None


def _advance(steps: Steps, value: Any) -> tuple[bool, Any]:
    """Resume a directive's generator: (done, what it yielded or returned)."""
    try:
        return False, steps.send(value)
    except StopIteration as end:
        return True, end.value


def _settled_off_slot(pool: ClientPool, loop: ClientLoop, c: int, d: Any) -> Report:
    """Directive ``d`` with the client materialised between its steps' settlements only
    (``ClientLoop.steps_of``): compute on a slot, park, settle on the clock, repeat."""
    steps = loop.steps_of(d)
    value = None
    try:
        while True:
            with pool.materialised(c) as slot:
                loop.client = slot.client
                try:
                    done, out = slot.call(_advance, steps, value)
                finally:
                    loop.client = None
            if done:
                return out
            value = loop.transport.settle(*out)  # no slot held: the medium may wait for others
    finally:
        steps.close()  # after a failure: the loop's own clean-up (its rows go out)


def summarise(stats: list[dict | None]) -> dict | None:
    """The hosts' ``VirtualStats`` as one summary entry (None when no host is virtual)."""
    vs = [s for s in stats if s]
    if not vs:
        return None
    n = sum(s["materialisations"] for s in vs)
    clients = sum(s["clients"] for s in vs)
    return {
        "slots": sum(s["slots"] for s in vs), "clients": clients, "materialisations": n,
        "materialise_ms": 1000 * sum(s["materialise_s"] for s in vs) / max(n, 1),
        "park_ms": 1000 * sum(s["park_s"] for s in vs) / max(n, 1),
        "parked_bytes_per_client": sum(s["parked_bytes"] for s in vs) / max(clients, 1),
        "shared_bytes_per_actor": sum(s["shared_bytes"] for s in vs) / len(vs),
    }


def _is_ref(value: Any) -> bool:
    try:
        import ray

        return isinstance(value, ray.ObjectRef)
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
