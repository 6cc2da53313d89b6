"""Client actor: one process hosting one or more emulated edge clients.

Each client holds its data partition, its head + compression module and its optimizer
(a ``SplitClient``), asks the scheduler for its budget and learning rate, and trains
against its shard: the activation message goes up as bytes, the gradient message comes
back as bytes. Compute is capped (``CpuCap``) to emulate a weak device.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

import numpy as np
import ray

from raysplit.config import SplitConfig
from raysplit.data import ArrayDataset, batches
from raysplit.observability.metrics import Recorder
from raysplit.runtime.cpu_cap import CpuCap
from raysplit.runtime.threads import compute_thread
from raysplit.scheduling import Assignment
from raysplit.training.client import SplitClient
from raysplit.training.run import evaluate, reset_kind


class InjectedFault(RuntimeError):
    """Raised by the fail_client test hook."""


class ClientHost:
    """Args:
    cfg: the split network.
    clients: {client id: (x, y)} partitions this process hosts.
    shards: {client id: shard actor handle}.
    scheduler: the BudgetScheduler actor.
    test: (x, y) test set (shared, read-only from the object store).
    run: batch_size, seed, max_batches, method, reset_filter, num_classes, dataset name.
    cpu_cap, cap_mechanism: see ``CpuCap`` (the cap is per client: a host of k clients
        gets k times the cap).
    fail_client: (client, epoch) test hook.
    """

    def __init__(
        self,
        cfg: SplitConfig,
        clients: dict[int, tuple[np.ndarray, np.ndarray]],
        shards: dict[int, object],
        scheduler,
        test: tuple[np.ndarray, np.ndarray],
        run: dict,
        cpu_cap: float | None = None,
        cap_mechanism: str = "auto",
        fail_client: tuple[int, int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run = run
        self.ids = sorted(clients)
        nc = run["num_classes"]
        clients = {c: _resolve(xy) for c, xy in clients.items()}
        test = _resolve(test)
        self.data = {c: ArrayDataset(run["dataset"], x, y, nc) for c, (x, y) in clients.items()}
        self.test = ArrayDataset(run["dataset"], test[0], test[1], nc)
        # Each client's torch work runs on a thread of its own (see compute_thread).
        self.compute = {c: compute_thread(f"client{c}", cfg.torch_threads or 1) for c in self.ids}
        self.clients = {c: self.compute[c].submit(SplitClient, cfg, c).result() for c in self.ids}
        self.shards = shards
        self.scheduler = scheduler
        self.assign: dict[int, Assignment] = {}
        cap = None if cpu_cap is None else cpu_cap * len(self.ids)
        name = f"{os.getpid()}-c{self.ids[0]}"
        self.cap = CpuCap(cap, cap_mechanism, name=name, per_thread=len(self.ids) > 1)
        self.metrics = Recorder()
        self.fail_client = fail_client
        self.lock = threading.Lock()  # the CPU-cap throttle is shared by the host's clients

    def ready(self) -> dict:
        return {"pid": os.getpid(), "clients": self.ids, "cap": self.cap.mechanism}

    def partition_size(self, client: int) -> int:
        return len(self.data[client])

    def _on(self, client: int, fn, *args):
        """Run ``fn(*args)`` on ``client``'s compute thread and wait for it."""
        if client not in self.compute:
            raise KeyError(f"client {client} is not hosted here (hosted: {self.ids})")
        return self.compute[client].submit(fn, *args).result()

    def begin_epoch(self, client: int) -> Assignment:
        """Ask the scheduler what to do; apply budget, lr and any filter reset."""
        a: Assignment = ray.get(self.scheduler.assignment.remote(client))
        self.assign[client] = a
        if a.epoch is not None:
            self._on(client, self._apply, client, a)
        return a

    def _apply(self, client: int, a: Assignment) -> None:
        c = self.clients[client]
        if a.transition and self.run["reset_filter"]:
            c.reset_filter(reset_kind(self.run["method"]), a.previous_budget, seed=self.cfg.seed + a.epoch)
        c.set_budget(a.budget)
        c.set_lr(a.lr)

    def train_steps(self, client: int, start: int = 0, count: int | None = None) -> dict:
        """Train batches [start, start+count) of the current epoch; returns step rows."""
        return self._on(client, self._train_steps, client, start, count)

    def _train_steps(self, client: int, start: int, count: int | None) -> dict:
        a = self.assign[client]
        if a.epoch is None:
            raise RuntimeError(f"client {client} has no epoch assigned")
        if self.fail_client == (client, a.epoch):
            raise InjectedFault(f"client {client}: injected fault at epoch {a.epoch}")
        c = self.clients[client]
        shard = self.shards[client]
        tag = f"client{client}"
        it = batches(
            self.data[client],
            self.run["batch_size"],
            shuffle=True,
            seed=self.cfg.seed,
            epoch=a.epoch,
            max_batches=self.run["max_batches"],
        )
        stop = None if count is None else start + count
        rows = []
        for i, (x, y) in enumerate(itertools.islice(it, start, stop), start=start):
            t0 = time.perf_counter()
            with self.cap.compute():
                up = c.forward(x, y)
            try:
                down, res = ray.get(shard.train.remote(up, a.lr))
            except Exception:
                c.abort_step()
                raise
            with self.cap.compute():
                info = c.backward(down)
            with self.lock:
                self.cap.pace()
            latency = time.perf_counter() - t0
            rows.append(
                {
                    "client": client,
                    "epoch": a.epoch,
                    "step": c.step,
                    "batch": i,
                    "budget": a.budget,
                    "bytes_up": len(up),
                    "bytes_down": len(down),
                    "latency": latency,
                    "loss": res["loss"],
                    "prune_loss": info["prune_loss"],
                    "samples": len(y),
                    "t": time.time(),
                }
            )
            self.metrics.step(
                tag, bytes_up=len(up), bytes_down=len(down), samples=len(y), latency_s=latency, loss=res["loss"]
            )
        return {"client": client, "rows": rows}

    def evaluate(self, client: int) -> dict:
        return self._on(client, self._evaluate, client)

    def _evaluate(self, client: int) -> dict:
        c = self.clients[client]
        shard = self.shards[client]
        correct, total, nbytes = evaluate(
            c, lambda bufs: ray.get(shard.predict.remote(bufs)), self.test, self.run["batch_size"]
        )
        acc = correct / max(total, 1)
        self.metrics.accuracy(f"client{client}", acc)
        return {"client": client, "correct": correct, "total": total, "bytes_up": nbytes}

    def run_all(self, client: int) -> dict:
        """Async policy: walk the whole schedule at this client's own pace."""
        rows, evals = [], []
        while True:
            a = self.begin_epoch(client)
            if a.epoch is None:
                break
            rows += self.train_steps(client)["rows"]
            ev = self.evaluate(client)
            evals.append({**ev, "epoch": a.epoch})
            ray.get(self.scheduler.epoch_done.remote(client, a.epoch))
        return {"client": client, "rows": rows, "evals": evals}

    def state(self, client: int) -> dict[str, np.ndarray]:
        return self._on(client, self.clients[client].state)

    def load_state(self, client: int, state: dict[str, np.ndarray]) -> None:
        self._on(client, self.clients[client].load_state, state)

    def filter_values(self, client: int):
        return self._on(client, self.clients[client].filter_values)

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


def _resolve(pair):
    """(x, y) given as arrays or as object-store references (read zero-copy)."""
    return tuple(ray.get(v) if isinstance(v, ray.ObjectRef) else v for v in pair)
