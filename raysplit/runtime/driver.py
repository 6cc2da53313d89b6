"""The driver of a cluster run (the controller): start the actors, let every client walk
the schedule, write the run directory as records arrive, stop.

It only wires things together. Clients drive themselves (``ClientLoop`` in the client
actors), the scheduler actor runs the policy, the shards run the tails. The driver
starts one ``run`` call per client and, every half second, moves what the actors put
into the record buffer to the run writer (so progress is live and a killed run leaves
its rows).

Failures go to the failure policy (``runtime/failure.py``), whose decision the driver
carries out without asking which policy runs: a client whose call failed is restarted
from its recovery point (``runtime/recovery.py``), or excluded (recorded in
``failed_clients`` and dropped from the schedule; the others go on and everything they
did is kept), or the run stops. Shards and the scheduler are restarted by Ray
(``max_restarts``) and reload their own state; their restarts reach the driver as
events, and the policy may still stop the run.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Sequence

import numpy as np
import ray

from raysplit.config.cluster import ClusterConfig
from raysplit.data import num_batches, partition
from raysplit.keys import Keyring, tenant_secret
from raysplit.observability.callbacks import Callback, ProgressBar
from raysplit.observability.metrics import Recorder
from raysplit.records.rows import Summary
from raysplit.records.writer import RunWriter
from raysplit.runtime.actors.buffer import RecordBufferActor
from raysplit.runtime.actors.client_host import ClientActor, ClientSpec, LoopSettings
from raysplit.runtime.actors.medium import MediumActor
from raysplit.runtime.actors.scheduler import SchedulerActor
from raysplit.runtime.actors.shard import ShardActor
from raysplit.runtime.actors.store import StateStoreActor
from raysplit.runtime.failure import (
    RAISE,
    RESTART,
    Failure,
    FailureDecision,
    Restarted,
    RunFailed,
    describe,
    fault_summary,
    make_failure_policy,
)
from raysplit.runtime import nodes, virtual
from raysplit.runtime.placement import actor_env, malloc_mode, shard_of
from raysplit.runtime import resume
from raysplit.training.setup import prepare, test_share
from raysplit.transport.emulated import EmulatedLink

POLL_SECONDS = 0.5



def waiting_calls(clients: int) -> int:
    """``max_concurrency`` of an async actor every client can wait inside at once (the
    scheduler at a barrier, the medium until the virtual clock settles a step): Ray's
    default, 1000, deadlocked 1,024-client runs of each (the 1,001st call never ran, and
    the calls running waited for it)."""
    return clients + 1000

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
        self.policy = make_failure_policy(cc.failure_policy, cc.max_failures)
        self.failures: collections.Counter = collections.Counter()  # (component, id) -> failures so far
        self.metrics = Recorder()

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
        self.resumed = resume.prepare(self) if cfg.resume else None  # the checkpoint, the kept rows; sets t0
        self.selection = None if cc.selection().everyone else cc.selection()
        self.malloc = malloc_mode(cc.malloc)
        env = actor_env(self.malloc, cc.openmp_spin)
        # Which nodes the actors go to (node types, placement groups): runtime/nodes.py.
        self.layout = layout = nodes.wait_for_layout(cc)
        for note in layout.notes:
            print(f"[raysplit] {note}", flush=True)
        self.placement_groups, strategies = nodes.create_groups(layout, cc.placement_timeout)
        use_gpu = layout.use_gpu

        self.buffer = RecordBufferActor.options(**nodes.on_driver_node()).remote()
        secret = tenant_secret(cfg.tenant_key_file)  # never written anywhere (raysplit/keys.py)
        keyring = Keyring(secret, self.identity.tenant)
        restarts = cc.restarts
        # Recovery keeps every reply since each client's recovery point at the shards: what a
        # restarted client replays, and what makes a checkpoint a consistent cut.
        self.recovery = restarts > 0 or cfg.checkpoint_every > 0
        self.store = StateStoreActor.options(**nodes.on_driver_node()).remote() if restarts > 0 else None
        retry = {"max_restarts": restarts, "max_task_retries": -1 if restarts > 0 else 0}
        shard_split = split.replace(torch_threads=cc.shard_threads or max(1, int(round(cc.shard_cpus))))
        self.shards = [
            ShardActor.options(**nodes.actor_options(layout, nodes.SHARD, k, strategies), max_concurrency=1000,
                               runtime_env=env, **retry).remote(
                shard_split, self.plan, k, self.identity, 1 if cc.mode == "ushaped" else cc.max_merge,
                "cuda" if use_gpu else "cpu",
                clients=[c for c in self.ids if shard_of(c, cc.shards) == k], max_batch=cfg.batch_size,
                recovery=self.recovery, store=self.store, buffer=self.buffer, keyring=keyring)
            for k in range(cc.shards)
        ]
        if self.store is not None:
            ray.get(self.store.put.remote("shards", self.shards))  # a restarted shard re-syncs from a replica
        link = cfg.link
        self.medium = None
        if link.enabled:  # the emulated network: one actor all transports and the scheduler talk to
            medium = link.build_medium({c: shard_of(c, cc.shards) for c in self.ids}, split.seed)
            # every client waits inside one ``step`` call until the clock settles it
            self.medium = MediumActor.options(**nodes.on_driver_node(), max_concurrency=waiting_calls(cc.clients)).remote(
                medium, link.link_mode, self.identity)
        self.scheduler = SchedulerActor.options(**nodes.on_driver_node(), **retry,
                                                max_concurrency=waiting_calls(cc.clients)).remote(
            cc.policy, self.plan, self.steps_per_epoch, {c: float(n) for c, n in self.part_sizes.items()},
            self.identity, self.shards, cc.shard_sync, self.buffer, segment_steps=cc.sync_every,
            aggregate=cc.mode == "splitfed", checkpoint_every=cfg.checkpoint_every, store=self.store,
            clocks=self.medium if link.enabled and link.link_mode == "virtual" else None,
            policy_options=cc.policy_options(), selection=self.selection,
        )
        self.client_num_cpus = layout.client_num_cpus
        # Each client's CPU cap: its device class's, else --client-cpu (the layout hosts
        # clients of one cap together). In virtual mode with modelled or scaled compute
        # nothing is really capped (the clock accounts for it).
        self.client_cpus = link.client_cpus(cc.clients, cc.client_cpu)
        real_cap = not link.enabled or link.link_mode == "realtime" or link.sim_compute == "measured"
        settings = LoopSettings(cfg.dataset, train.num_classes, cfg.batch_size, split.seed, self.t0,
                                cc.fail_client, on_nonfinite=cfg.on_nonfinite, recovery=self.recovery)
        client_split = split.replace(torch_threads=split.torch_threads or 1)
        self.clients_per_actor = layout.clients_per_actor
        self.hosts, self.host_of = [], {}
        compute = {}  # cap -> the virtual clock's compute model
        self.specs: dict[int, ClientSpec] = {}  # held here: a restarted host reads its data from these
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
                                      ray.put(test.x[share]), ray.put(test.y[share]), self.shards[s], s, emulated,
                                      steps_per_epoch=self.steps_per_epoch[c], key=keyring.client_key(c))
            self.specs.update(specs)
            opts = nodes.actor_options(layout, "host", i, strategies)
            host = ClientActor.options(**opts, max_concurrency=len(ids) + 4, runtime_env=env,
                                       max_restarts=restarts).remote(
                client_split, self.plan, specs, self.scheduler, self.buffer, self.identity, settings,
                cap if real_cap else None, cc.cap_mechanism, store=self.store,
                materialise=None if cc.materialise == "all" else cc.materialise)
            self.hosts.append(host)
            for c in ids:
                self.host_of[c] = host
        del train, test, prep, secret, keyring
        if self.medium is not None:
            ray.get(self.medium.ready.remote())
        ready = nodes.wait_ready([*self.shards, *self.hosts], cc.placement_timeout)
        self.shard_info, self.host_info = ready[: cc.shards], ready[cc.shards :]
        if cc.shards > 1 and cc.shard_sync == "allreduce":
            addr, port = ray.get(self.shards[0].address.remote())
            ray.get([s.init_dist.remote(addr, port, r, cc.shards) for r, s in enumerate(self.shards)])
        total_steps = expected_steps(self.steps_per_epoch, self.plan.total_epochs, self.selection)
        self.progress = ProgressBar(total_steps, desc=f"{cfg.method} x{cc.clients}", enabled=cfg.progress)
        config = cc.to_dict()
        config["train"] = cfg.to_dict()
        self.writer = RunWriter(cfg.out, config=config, clients=self.ids, split=split, method=cfg.method,
                                callbacks=[self.progress, *self.callbacks], resume=self.resumed is not None)
        if self.resumed is not None:
            resume.restore(self, self.resumed)
        self.startup_seconds = time.perf_counter() - t0

    # -- run --------------------------------------------------------------------
    def run(self) -> Summary:
        t0 = time.perf_counter()
        # ref -> (client, what the call is): "run" walks the schedule; "ready" waits for a
        # host that Ray is restarting, after which the client resumes.
        # a resumed run's clients first rebuild themselves from the checkpoint (as after a restart)
        first = (lambda h, c: h.resume.remote(c, announce=False)) if self.resumed else (lambda h, c: h.run.remote(c))
        pending = {first(self.host_of[c], c): (c, "run") for c in self.ids if c not in self.failed}
        self.results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                c, what = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - one client's failure must not stop the run
                    if self._after_error(c, what, e):
                        pending[self.host_of[c].ready.remote()] = (c, "ready")
                    continue
                if what == "ready":
                    self.host_info[self.hosts.index(self.host_of[c])] = result  # its new pid
                    pending[self.host_of[c].resume.remote(c)] = (c, "run")
                else:
                    self.results[c] = result
            self._drain()
        final = ray.get(self.scheduler.finish.remote())
        self._drain()
        self.train_seconds = time.perf_counter() - t0
        self.transitions = final["transitions"]
        summary = self.summary()
        self.writer.close(summary)
        return summary

    def _after_error(self, client: int, what: str, error: Exception) -> bool:
        """A client's call failed: returns True if it is to resume once its host is ready."""
        if what == "ready":
            if isinstance(error, ray.exceptions.ActorUnavailableError):  # Ray is still restarting it
                time.sleep(POLL_SECONDS / 5)
                return True
            self._fail(client, describe(error)[0], "excluded: its process could not be restarted")
            return False
        return self._client_failed(client, error)

    def _drain(self) -> None:
        items = ray.get(self.buffer.drain.remote())
        self.writer.put(items)
        for ev in items:
            if isinstance(ev, Restarted):
                self.metrics.recovery(ev.component, ev.seconds, tenant=self.identity.tenant)
                if ev.component != "client":  # Ray restarted it; the policy may still stop the run
                    self._decide(Failure(ev.component, ev.id, "its process died (Ray restarted it)", True,
                                         self._count(ev.component, ev.id)))

    def _count(self, component: str, id: int) -> int:
        self.failures[(component, id)] += 1
        return self.failures[(component, id)]

    def _decide(self, failure: Failure) -> FailureDecision:
        decision = self.policy.make_decision(failure)
        self.metrics.failure(failure.component, decision.value, tenant=self.identity.tenant)
        if decision is RAISE:
            print(f"[raysplit] {failure}; the failure policy stops the run", flush=True)
            raise RunFailed(str(failure))
        return decision

    def _client_failed(self, client: int, error: Exception) -> bool:
        """Ask the failure policy; returns True if the client is to be restarted."""
        msg, retryable = describe(error)
        failure = Failure("client", client, msg, retryable, self._count("client", client))
        decision = self._decide(failure)
        if decision is RESTART:
            print(f"[raysplit] client {client} failed ({msg}); restarting it from its recovery point "
                  f"(failure {failure.count}, at most {self.policy.max_failures})", flush=True)
            return True
        n = failure.count
        self._fail(client, msg, f"excluded after {n} failure{'s' if n != 1 else ''}")
        return False

    def _fail(self, client: int, msg: str, why: str = "dropped") -> None:
        self.failed[client] = msg
        print(f"[raysplit] client {client} failed and is {why}: {msg}", flush=True)
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
            **fault_summary(w, ray.get([s.refusals.remote() for s in self.shards])),
            resumed_from=None if self.resumed is None else self.resumed.source,
            virtual=virtual.summarise(self._each_host("virtual_stats")),
        )

    def _each_host(self, method: str) -> list:
        """``method()`` of every client host; None for a host that died."""
        out = []
        for h in self.hosts:
            try:
                out.append(ray.get(getattr(h, method).remote(), timeout=30))
            except Exception:  # noqa: BLE001 - a dead host (removed node) reports nothing
                out.append(None)
        return out

    def stop(self) -> None:
        for h in self.hosts:
            try:
                ray.get(h.shutdown.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a dead host has nothing to release
                pass
            ray.kill(h)
        for a in [*self.shards, self.scheduler, self.buffer, *([self.medium] if self.medium is not None else []),
                  *([self.store] if self.store is not None else [])]:
            ray.kill(a)
        nodes.remove_groups(getattr(self, "placement_groups", []))


def expected_steps(steps_per_epoch: dict[int, int], epochs: int, selection=None) -> int:
    """Training steps of a run without failures (the progress bar's total)."""
    if selection is None:
        return sum(steps_per_epoch.values()) * epochs
    return sum(steps_per_epoch[c] for e in range(epochs) for c in selection.participants(e, steps_per_epoch))


def run_cluster(cc: ClusterConfig, *, callbacks: Sequence[Callback] = ()) -> tuple[Summary, Cluster]:
    """Start, train (writing the run directory), stop. Returns (summary, cluster)."""
    cluster = Cluster(cc, callbacks)
    cluster.start()
    try:
        summary = cluster.run()
    finally:
        cluster.stop()
    return summary, cluster
