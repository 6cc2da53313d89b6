"""The driver of a cluster run: start the actors, walk the schedule, collect results.

It only wires things together; the math lives in the pure modules and the state in the
actors. A client that fails (its actor dies or a step raises) is recorded in
``failed_clients`` with its error and dropped from the schedule; the others go on and
everything they did is kept.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
import ray
from tqdm import tqdm

from raysplit.data import partition
from raysplit.runtime.client_actor import ClientActor
from raysplit.config.cluster import ClusterConfig
from raysplit.runtime.scheduler import SchedulerActor
from raysplit.runtime.shard import ShardActor, average_shards
from raysplit.training.run import load_data, partition_order, resolve, run_identity
from raysplit.training.state import weighted_average


# glibc malloc settings for the actors (see ClusterConfig.malloc). "lean": tensors over
# 64 KiB are mmap'ed and go back to the OS when freed, so an idle client holds ~400 MB
# instead of ~880 MB, at the price of ~43k page faults per step (~25 % slower steps).
# "fast": two arenas (bounded growth) and high mmap/trim thresholds, so activations reuse
# heap memory step after step without page faults (what glibc's mallopt would set).
MALLOC_ENV = {
    "lean": {"MALLOC_MMAP_THRESHOLD_": "65536"},
    "fast": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
        "MALLOC_TRIM_THRESHOLD_": str(512 << 20),
    },
}


# Beyond this many client processes per CPU, extra processes only time-share the cores
# while each costs its own torch (measured: 32 clients on 2 cores ran 221 samples/s as 32
# processes and 287 as 8; benchmarks/scaling.py).
PROCESSES_PER_CPU = 4


def max_client_processes(cpus: float) -> int:
    """The most client processes worth running on ``cpus`` (a CPU-less head counts as 1)."""
    return max(1, int(PROCESSES_PER_CPU * max(cpus, 1.0)))


def malloc_mode(setting: str, clients: int, cpus: float) -> str:
    """"auto": lean when there are more clients than client processes worth running
    (many idle tenants on a box, where memory is what limits), fast otherwise."""
    if setting != "auto":
        return setting
    return "lean" if clients > max_client_processes(cpus) else "fast"


def actor_env(malloc: str, openmp_spin: int | None) -> dict:
    """The actors' runtime_env: malloc mode and OpenMP spin (see ClusterConfig)."""
    env = dict(MALLOC_ENV[malloc])
    if openmp_spin is not None:
        env["GOMP_SPINCOUNT"] = str(openmp_spin)
    return {"env_vars": env}


def hosting(setting: int | str, clients: int, cpus: float) -> int:
    """Clients per actor process. "auto": one each up to max_client_processes; above
    that the fewest per process that keeps the process count within it."""
    if setting != "auto":
        return int(setting)
    return -(-clients // max_client_processes(cpus))


class Cluster:
    """The actors of one run. ``start`` creates them; ``run`` trains; ``stop`` kills them."""

    def __init__(self, cc: ClusterConfig) -> None:
        self.cc = cc
        self.failed: dict[int, str] = {}
        self.startup_seconds = 0.0

    # -- start ------------------------------------------------------------------
    def start(self, progress: bool = True) -> None:
        cc = self.cc
        t0 = time.perf_counter()
        train, test = load_data(cc.train)
        self.cfg = cfg = resolve(cc.train, train)
        self.train_size, self.test_size = len(train), len(test)
        parts = [partition_order(p) for p in partition(train.y, cc.clients, cc.partition, cc.alpha, cfg.split.seed)]
        self.part_sizes = {c: len(p) for c, p in enumerate(parts)}
        self.ids = list(range(cc.clients))
        resources = ray.cluster_resources()
        cpus = resources.get("CPU", 1.0)
        self.malloc = malloc_mode(cc.malloc, cc.clients, cpus)
        env = actor_env(self.malloc, cc.openmp_spin)
        use_gpu = cc.shard_device == "cuda" or (cc.shard_device == "auto" and resources.get("GPU", 0) >= cc.shards)
        shard_threads = cc.shard_threads or max(1, int(round(cc.shard_cpus)))
        shard_split = cfg.split.replace(torch_threads=shard_threads)
        shard_opts = {
            "num_cpus": cc.shard_cpus,
            "num_gpus": 1 if use_gpu else 0,
            "max_concurrency": 1000,
            "runtime_env": env,
        }
        if resources.get("shard", 0) >= cc.shards:  # cluster.yaml's GPU node type declares it
            shard_opts["resources"] = {"shard": 1}
        self.shards = [
            ShardActor.options(**shard_opts).remote(shard_split, k, cc.max_merge, "cuda" if use_gpu else "cpu")
            for k in range(cc.shards)
        ]
        self.scheduler = SchedulerActor.options(num_cpus=0).remote(cfg.schedule(), self.ids, cc.policy)
        self.client_num_cpus = self._client_num_cpus(resources)
        test_refs = (ray.put(test.x), ray.put(test.y))
        run = {
            "batch_size": cfg.batch_size,
            "max_batches": cfg.max_batches,
            "method": cfg.method,
            "reset_filter": cfg.reset_filter,
            "num_classes": train.num_classes,
            "dataset": cfg.dataset,
        }
        client_split = cfg.split.replace(torch_threads=cfg.split.torch_threads or 1)
        self.clients_per_actor = k = hosting(cc.clients_per_actor, cc.clients, cpus)
        self.hosts, self.host_of = [], {}
        for first in range(0, cc.clients, k):
            ids = self.ids[first : first + k]
            data = {c: (ray.put(train.x[parts[c]]), ray.put(train.y[parts[c]])) for c in ids}
            opts = {
                "num_cpus": self.client_num_cpus * len(ids),
                "max_concurrency": len(ids) + 4,
                "runtime_env": env,
            }
            if resources.get("client", 0) >= 1:
                opts["resources"] = {"client": min(1.0, float(len(ids)))}
            host = ClientActor.options(**opts).remote(
                client_split,
                data,
                {c: self.shards[c % cc.shards] for c in ids},
                self.scheduler,
                test_refs,
                run,
                cc.client_cpu,
                cc.cap_mechanism,
                cc.fail_client,
            )
            self.hosts.append(host)
            for c in ids:
                self.host_of[c] = host
        del train
        ready = ray.get([s.ready.remote() for s in self.shards] + [h.ready.remote() for h in self.hosts])
        self.shard_info = ready[: cc.shards]
        self.host_info = ready[cc.shards :]
        if cc.shards > 1 and cc.shard_sync == "allreduce":
            addr, port = ray.get(self.shards[0].address.remote())
            self.backend = ray.get(
                [s.init_dist.remote(addr, port, r, cc.shards) for r, s in enumerate(self.shards)]
            )[0]
        self.startup_seconds = time.perf_counter() - t0

    def _client_num_cpus(self, resources: dict) -> float:
        """Ray's scheduling share per client: the cap, scaled down if the clients would
        not fit next to the shards (emulating many tenants on one machine)."""
        want = self.cc.client_cpu if self.cc.client_cpu is not None else 0.25
        free = max(resources.get("CPU", 1.0) - self.cc.shard_cpus * self.cc.shards, 0.0)
        fit = 0.9 * free / self.cc.clients if free > 0 else 0.0
        share = min(want, fit) if fit > 0 else 0.0
        return math.floor(share * 1000) / 1000  # Ray accepts 4 decimals; stay below

    # -- helpers ----------------------------------------------------------------
    def alive(self) -> list[int]:
        return [c for c in self.ids if c not in self.failed]

    def _gather(self, refs: dict[int, ray.ObjectRef], bar: tqdm | None = None) -> dict[int, object]:
        """Results per client; a client whose call raised is marked failed, not fatal."""
        out: dict[int, object] = {}
        pending = {r: c for c, r in refs.items()}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for r in done:
                c = pending.pop(r)
                try:
                    out[c] = ray.get(r)
                    if bar is not None and isinstance(out[c], dict) and "rows" in out[c]:
                        bar.update(len(out[c]["rows"]))
                except Exception as e:  # noqa: BLE001 - one client's failure must not stop the run
                    self._fail(c, e)
        return out

    def _fail(self, client: int, error: Exception) -> None:
        cause = getattr(error, "cause", None) or error  # a RayTaskError wraps the real one
        msg = f"{type(cause).__name__}: {cause}".strip().splitlines()[0][:500]
        self.failed[client] = msg
        print(f"[raysplit] client {client} failed and is dropped: {msg}", flush=True)
        ray.get(self.scheduler.client_failed.remote(client, msg))

    def _batches_per_epoch(self, client: int) -> int:
        n = math.ceil(self.part_sizes[client] / self.cfg.batch_size)
        return n if self.cfg.max_batches is None else min(n, self.cfg.max_batches)

    def sync_shards(self) -> None:
        if len(self.shards) < 2:
            return
        if self.cc.shard_sync == "allreduce":
            ray.get([s.allreduce.remote() for s in self.shards])
        else:
            average_shards(self.shards)

    def average_heads(self) -> None:
        """SplitFed: sample-weighted average of every live client's head + module."""
        alive = self.alive()
        states = self._gather({c: self.host_of[c].state.remote(c) for c in alive})
        ids = [c for c in alive if c in states]
        if not ids:
            return
        avg = weighted_average([states[c] for c in ids], [self.part_sizes[c] for c in ids])
        avg_ref = ray.put(avg)
        self._gather({c: self.host_of[c].load_state.remote(c, avg_ref) for c in ids})

    # -- run --------------------------------------------------------------------
    def run(self, progress: bool = True) -> dict:
        t0 = time.perf_counter()
        sched = self.cfg.schedule()
        rows: list[dict] = []
        evals: dict[int, list[dict]] = defaultdict(list)  # epoch -> per-client eval
        lrs: dict[int, float] = {}
        if self.cc.policy == "sync":
            bar = tqdm(total=sched.total_epochs, desc="epochs", unit="epoch", disable=not progress, position=0)
            for epoch in range(sched.total_epochs):
                got = self._gather({c: self.host_of[c].begin_epoch.remote(c) for c in self.alive()})
                assigned = [a for a in got.values() if a.epoch is not None]
                if not assigned:
                    break
                lrs[epoch] = assigned[0].lr
                steps_total = sum(self._batches_per_epoch(c) for c in self.alive())
                sbar = tqdm(
                    total=steps_total, desc=f"epoch {epoch} B={assigned[0].budget}", unit="step",
                    disable=not progress, position=1, leave=False,
                )
                seg = self.cc.sync_every or None
                start = 0
                longest = max(self._batches_per_epoch(c) for c in self.alive())
                while True:
                    res = self._gather(
                        {c: self.host_of[c].train_steps.remote(c, start, seg) for c in self.alive()}, sbar
                    )
                    for r in res.values():
                        rows += r["rows"]
                    self.sync_shards()
                    if seg is None or start + seg >= longest:
                        break
                    start += seg
                sbar.close()
                if self.cc.mode == "splitfed":
                    self.average_heads()
                    # every head is now the same: one evaluation stands for all
                    first = self.alive()[:1]
                    ev = self._gather({c: self.host_of[c].evaluate.remote(c) for c in first})
                    for c in self.alive():
                        if first and first[0] in ev:
                            evals[epoch].append({**ev[first[0]], "client": c})
                else:
                    ev = self._gather({c: self.host_of[c].evaluate.remote(c) for c in self.alive()})
                    evals[epoch] += list(ev.values())
                for c in self.alive():
                    ray.get(self.scheduler.epoch_done.remote(c, epoch))
                acc = _weighted_acc(evals[epoch])
                bar.set_postfix(B=assigned[0].budget, acc=f"{acc:.3f}", failed=len(self.failed))
                bar.update(1)
            bar.close()
        else:
            res = self._gather({c: self.host_of[c].run_all.remote(c) for c in self.alive()})
            for r in res.values():
                rows += r["rows"]
                for e in r["evals"]:
                    evals[e["epoch"]].append(e)
            self.sync_shards()
            for e in range(sched.total_epochs):
                lrs[e] = sched.lr_at(e)
        self.train_seconds = time.perf_counter() - t0
        self.transitions = ray.get(self.scheduler.transitions.remote())
        return self._collect(rows, evals, lrs, sched)

    def _collect(self, rows, evals, lrs, sched) -> dict:
        t_first = min((r["t"] for r in rows), default=0.0)
        for r in rows:
            r["t"] = r["t"] - t_first
        epochs = []
        for e in sorted(set(r["epoch"] for r in rows)):
            er = [r for r in rows if r["epoch"] == e]
            n = sum(r["samples"] for r in er)
            epochs.append(
                {
                    "epoch": e,
                    "budget": sched.budget_at(e),
                    "lr": lrs.get(e, sched.lr_at(e)),
                    "train_loss": sum(r["loss"] * r["samples"] for r in er) / max(n, 1),
                    "test_accuracy": _weighted_acc(evals.get(e, [])),
                    "bytes_up": sum(r["bytes_up"] for r in er),
                    "bytes_down": sum(r["bytes_down"] for r in er),
                    "samples": n,
                    "clients": len({r["client"] for r in er}),
                }
            )
        self.rows, self.epochs = rows, epochs
        return {"rows": rows, "epochs": epochs}

    def summary(self) -> dict:
        cfg, cc = self.cfg, self.cc
        merges = ray.get([s.merge_stats.remote() for s in self.shards])
        flat = [m for ms in merges for m in ms]
        return {
            **run_identity(cfg),
            "final_test_accuracy": self.epochs[-1]["test_accuracy"] if self.epochs else float("nan"),
            "bytes_up": int(sum(r["bytes_up"] for r in self.rows)),
            "bytes_down": int(sum(r["bytes_down"] for r in self.rows)),
            "samples": int(sum(r["samples"] for r in self.rows)),
            "wall_seconds": self.startup_seconds + self.train_seconds,
            "train_seconds": self.train_seconds,
            "startup_seconds": self.startup_seconds,
            "clients": cc.clients,
            "clients_per_actor": self.clients_per_actor,
            "client_actors": len(self.hosts),
            "shards": cc.shards,
            "mode": cc.mode,
            "policy": cc.policy,
            "shard_sync": cc.shard_sync,
            "client_cpu": cc.client_cpu,
            "cap_mechanism": sorted({h["cap"] for h in self.host_info}),
            "client_num_cpus": self.client_num_cpus,
            "malloc": self.malloc,
            "shard_devices": [s["device"] for s in self.shard_info],
            "train_samples": self.train_size,
            "test_samples": self.test_size,
            "failed_clients": {str(c): e for c, e in sorted(self.failed.items())},
            "transitions": self.transitions,
            "mean_merged_microbatches": float(np.mean(flat)) if flat else 0.0,
        }

    def stop(self) -> None:
        for h in self.hosts:
            try:
                ray.get(h.shutdown.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a dead host has nothing to release
                pass
            ray.kill(h)
        for a in [*self.shards, self.scheduler]:
            ray.kill(a)


def _weighted_acc(evals: list[dict]) -> float:
    total = sum(e["total"] for e in evals)
    return sum(e["correct"] for e in evals) / total if total else float("nan")


STEP_FIELDS = ("client", "epoch", "step", "budget", "bytes_up", "bytes_down", "latency", "loss", "prune_loss", "samples", "t")


def run_cluster(cc: ClusterConfig, *, progress: bool = True, write: bool = True) -> tuple[dict, Cluster]:
    """Start, train, write the run directory, stop. Returns (summary, cluster)."""
    from raysplit.results import write_run

    cluster = Cluster(cc)
    cluster.start(progress=progress)
    try:
        cluster.run(progress=progress)
        summary = cluster.summary()
    finally:
        cluster.stop()
    if write:
        steps = [{k: r[k] for k in STEP_FIELDS} for r in cluster.rows]
        config = cc.to_dict()
        config["train"] = cluster.cfg.to_dict()
        write_run(cc.train.out, config=config, summary=summary, epochs=cluster.epochs, steps=steps)
    return summary, cluster
