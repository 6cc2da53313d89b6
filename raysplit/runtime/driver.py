"""The driver of a cluster run (the controller): start the actors, let every client walk
the schedule, write the run directory as records arrive, stop.

It only wires things together. Clients drive themselves (``ClientLoop`` in the client
actors), the scheduler actor runs the policy, the shards run the tails. The driver
starts one ``run`` call per client and, every half second, moves what the actors put
into the record buffer to the run writer (so progress is live and a killed run leaves
its rows). A client whose call fails (its step raised, or its process died) is recorded
in ``failed_clients`` and dropped from the schedule; the others go on and everything
they did is kept.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import ray

from raysplit.config.cluster import ClusterConfig
from raysplit.data import num_batches, partition
from raysplit.observability.callbacks import Callback, ProgressBar
from raysplit.records.rows import Summary
from raysplit.records.writer import RunWriter
from raysplit.runtime.actors.buffer import RecordBufferActor
from raysplit.runtime.actors.client_host import ClientActor, ClientSpec, LoopSettings
from raysplit.runtime.actors.medium import MediumActor
from raysplit.runtime.actors.scheduler import SchedulerActor
from raysplit.runtime.actors.shard import ShardActor
from raysplit.runtime import nodes
from raysplit.runtime.placement import actor_env, malloc_mode, shard_of
from raysplit.training.setup import prepare, test_share
from raysplit.transport.emulated import EmulatedLink

POLL_SECONDS = 0.5


class Cluster:
    """The actors of one run. ``start`` creates them, ``run`` trains, ``stop`` kills them.

    Args:
        cc: the run's configuration.
        callbacks: observers of the run's records (``raysplit.observability.callbacks``).
    """

    def __init__(self, cc: ClusterConfig, callbacks: Sequence[Callback] = ()) -> None:
        self.cc = cc
        self.callbacks = list(callbacks)
        self.failed: dict[int, str] = {}
        self.startup_seconds = 0.0
        self.train_seconds = 0.0

    # -- start ------------------------------------------------------------------
    def start(self) -> None:
        cc = self.cc
        self.t0 = time.time()
        t0 = time.perf_counter()
        prep = prepare(cc.train)
        self.cfg, self.plan, self.identity = prep.cfg, prep.plan, prep.identity
        cfg, split = self.cfg, self.cfg.split
        train, test = prep.train, prep.test
        self.train_size, self.test_size = len(train), len(test)
        self.ids = list(range(cc.clients))
        # Clients keep their partition in data-set order, so one client over all the data
        # sees exactly the batches the local trainer sees.
        parts = [np.sort(p) for p in partition(train.y, cc.clients, cc.partition, cc.alpha, split.seed)]
        self.part_sizes = {c: len(p) for c, p in enumerate(parts)}
        self.steps_per_epoch = {
            c: num_batches(n, cfg.batch_size, max_batches=cfg.max_batches) for c, n in self.part_sizes.items()
        }
        self.malloc = malloc_mode(cc.malloc)
        env = actor_env(self.malloc, cc.openmp_spin)
        # Which nodes the actors go to (node types, placement groups): runtime/nodes.py.
        self.layout = layout = nodes.wait_for_layout(cc)
        for note in layout.notes:
            print(f"[raysplit] {note}", flush=True)
        self.placement_groups, strategies = nodes.create_groups(layout, cc.placement_timeout)
        use_gpu = layout.use_gpu

        self.buffer = RecordBufferActor.options(**nodes.on_driver_node()).remote()
        shard_split = split.replace(torch_threads=cc.shard_threads or max(1, int(round(cc.shard_cpus))))
        self.shards = [
            ShardActor.options(**nodes.actor_options(layout, nodes.SHARD, k, strategies), max_concurrency=1000,
                               runtime_env=env).remote(shard_split, self.plan, k, self.identity, cc.max_merge,
                                                       "cuda" if use_gpu else "cpu")
            for k in range(cc.shards)
        ]
        link = cfg.link
        self.medium = None
        if link.enabled:  # the emulated network: one actor all transports and the scheduler talk to
            medium = link.build_medium({c: shard_of(c, cc.shards) for c in self.ids}, split.seed)
            self.medium = MediumActor.options(**nodes.on_driver_node()).remote(medium, link.link_mode, self.identity)
        self.scheduler = SchedulerActor.options(**nodes.on_driver_node()).remote(
            cc.policy, self.plan, self.steps_per_epoch, {c: float(n) for c, n in self.part_sizes.items()},
            self.identity, self.shards, cc.shard_sync, self.buffer, segment_steps=cc.sync_every,
            aggregate=cc.mode == "splitfed", checkpoint_every=cfg.checkpoint_every,
            clocks=self.medium if link.enabled and link.link_mode == "virtual" else None,
            policy_options=cc.policy_options(),
        )
        self.client_num_cpus = layout.client_num_cpus
        # Each client's CPU cap: its device class's, else --client-cpu (the layout hosts
        # clients of one cap together). In virtual mode with modelled or scaled compute
        # nothing is really capped (the clock accounts for it).
        self.client_cpus = link.client_cpus(cc.clients, cc.client_cpu)
        real_cap = not link.enabled or link.link_mode == "realtime" or link.sim_compute == "measured"
        settings = LoopSettings(cfg.dataset, train.num_classes, cfg.batch_size, split.seed, self.t0,
                                cc.fail_client)
        client_split = split.replace(torch_threads=split.torch_threads or 1)
        self.clients_per_actor = layout.clients_per_actor
        self.hosts, self.host_of = [], {}
        compute = {}  # cap -> the virtual clock's compute model
        for i, ids in enumerate(layout.hosts):
            cap = self.client_cpus[ids[0]]
            specs = {}
            for c in ids:
                share = test_share(len(test), cc.clients, c, cfg.evaluate)
                s = shard_of(c, cc.shards)
                emulated = None
                if self.medium is not None:
                    if cap not in compute:
                        compute[cap] = link.compute_model(split, cap) if link.link_mode == "virtual" else None
                    emulated = EmulatedLink(self.medium, link.link_mode, compute[cap])
                specs[c] = ClientSpec(ray.put(train.x[parts[c]]), ray.put(train.y[parts[c]]),
                                      ray.put(test.x[share]), ray.put(test.y[share]), self.shards[s], s, emulated)
            opts = nodes.actor_options(layout, "host", i, strategies)
            host = ClientActor.options(**opts, max_concurrency=len(ids) + 4, runtime_env=env).remote(
                client_split, self.plan, specs, self.scheduler, self.buffer, self.identity, settings,
                cap if real_cap else None, cc.cap_mechanism)
            self.hosts.append(host)
            for c in ids:
                self.host_of[c] = host
        del train, test, prep
        if self.medium is not None:
            ray.get(self.medium.ready.remote())
        ready = nodes.wait_ready([*self.shards, *self.hosts], cc.placement_timeout)
        self.shard_info, self.host_info = ready[: cc.shards], ready[cc.shards :]
        if cc.shards > 1 and cc.shard_sync == "allreduce":
            addr, port = ray.get(self.shards[0].address.remote())
            ray.get([s.init_dist.remote(addr, port, r, cc.shards) for r, s in enumerate(self.shards)])
        total_steps = sum(self.steps_per_epoch.values()) * self.plan.total_epochs
        self.progress = ProgressBar(total_steps, desc=f"{cfg.method} x{cc.clients}", enabled=cfg.progress)
        config = cc.to_dict()
        config["train"] = cfg.to_dict()
        self.writer = RunWriter(cfg.out, config=config, clients=self.ids, split=split, method=cfg.method,
                                callbacks=[self.progress, *self.callbacks])
        self.startup_seconds = time.perf_counter() - t0

    # -- run --------------------------------------------------------------------
    def run(self) -> Summary:
        t0 = time.perf_counter()
        pending = {self.host_of[c].run.remote(c): c for c in self.ids}
        self.results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                c = pending.pop(ref)
                try:
                    self.results[c] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - one client's failure must not stop the run
                    self._fail(c, e)
            self.writer.put(ray.get(self.buffer.drain.remote()))
        final = ray.get(self.scheduler.finish.remote())
        self.writer.put(ray.get(self.buffer.drain.remote()))
        self.train_seconds = time.perf_counter() - t0
        self.transitions = final["transitions"]
        summary = self.summary()
        self.writer.close(summary)
        return summary

    def _fail(self, client: int, error: Exception) -> None:
        cause = getattr(error, "cause", None) or error  # a RayTaskError wraps the real one
        msg = f"{type(cause).__name__}: {cause}".strip().splitlines()[0][:500]
        self.failed[client] = msg
        print(f"[raysplit] client {client} failed and is dropped: {msg}", flush=True)
        ray.get(self.scheduler.drop.remote(client, msg))
        self.writer.client_failed(client, msg)

    def summary(self) -> Summary:
        cfg, cc, w = self.cfg, self.cc, self.writer
        merges = [m for ms in ray.get([s.merge_stats.remote() for s in self.shards]) for m in ms]
        first = self.results.get(min(self.results)) if self.results else None
        return Summary(
            run=self.identity.run, tenant=self.identity.tenant, method=cfg.method, dataset=cfg.dataset,
            model=cfg.split.model, split_layer=cfg.split.split_layer, budgets=list(self.plan.schedule.budgets),
            epochs_per_budget=list(self.plan.schedule.epochs), codec=cfg.split.codec,
            final_test_accuracy=w.epoch_rows[-1].test_accuracy if w.epoch_rows else math.nan,
            bytes_up=w.totals["bytes_up"], bytes_down=w.totals["bytes_down"], samples=w.totals["samples"],
            steps=w.totals["steps"], wall_seconds=self.startup_seconds + self.train_seconds,
            startup_seconds=self.startup_seconds, train_seconds=self.train_seconds, train_samples=self.train_size,
            test_samples=self.test_size, epochs=len(w.epoch_rows), transitions=self.transitions, models=w.models,
            checkpoints=w.checkpoints, final_filter=None if first is None else first.final_filter,
            clients=cc.clients, clients_per_actor=self.clients_per_actor, client_actors=len(self.hosts),
            shards=cc.shards, mode=cc.mode, policy=cc.policy, shard_sync=cc.shard_sync, client_cpu=cc.client_cpu,
            cap_mechanism=sorted({h["cap"] for h in self.host_info}), client_num_cpus=self.client_num_cpus,
            malloc=self.malloc, shard_devices=[s["device"] for s in self.shard_info],
            failed_clients={str(c): e for c, e in sorted(self.failed.items())},
            mean_merged_microbatches=float(np.mean(merges)) if merges else 0.0,
            placement=nodes.where(self.layout, self.shard_info, self.host_info),
            **cfg.link.summary_fields(w, cc.clients),
        )

    def stop(self) -> None:
        for h in self.hosts:
            try:
                ray.get(h.shutdown.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a dead host has nothing to release
                pass
            ray.kill(h)
        for a in [*self.shards, self.scheduler, self.buffer, *([self.medium] if self.medium is not None else [])]:
            ray.kill(a)
        nodes.remove_groups(getattr(self, "placement_groups", []))


def run_cluster(cc: ClusterConfig, *, callbacks: Sequence[Callback] = ()) -> tuple[Summary, Cluster]:
    """Start, train (writing the run directory), stop. Returns (summary, cluster)."""
    cluster = Cluster(cc, callbacks)
    cluster.start()
    try:
        summary = cluster.run()
    finally:
        cluster.stop()
    return summary, cluster
