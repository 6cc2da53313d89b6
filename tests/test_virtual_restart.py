"""Restart of failed virtual clients (slow; a local Ray).

One process hosts four virtual clients with one slot (``--materialise 1``): at any moment
one of them is materialised and the others are parked (as numpy, or waiting at a barrier
holding nothing). The process is SIGKILLed mid-run; under the default failure policy
(restart) Ray restarts it, and every one of its clients is rebuilt from its recovery point
and its shard's step log, on a slot, and runs on. The run must complete with no client
lost and every client's every step recorded exactly once.
"""

from __future__ import annotations

import os
import signal
import time

import pyarrow.parquet as pq
import pytest
import ray

from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
from raysplit.observability.callbacks import Callback
from raysplit.runtime.driver import Cluster

pytestmark = pytest.mark.slow
STEPS = 20  # per client and epoch (2 epochs)
CLIENTS = 4


class KillHost(Callback):
    """SIGKILL the process hosting the clients as soon as any client has recorded ``after``
    steps. The first client to get there is the one that holds the slot (a client keeps it
    for a whole training segment), so the others have not yet started theirs: the kill finds
    every client with work left. (Waiting for one given client instead let another finish
    all its steps first, on a fast machine, and not need a restart.)"""

    def __init__(self, after: int) -> None:
        self.after, self.killed = after, None
        self.seen: dict[int, int] = {}
        self.cluster = None

    def on_steps(self, rows) -> None:
        for r in rows:
            self.seen[r.client] = self.seen.get(r.client, 0) + 1
        if self.killed is None and max(self.seen.values(), default=0) >= self.after and self.cluster is not None:
            self.killed = self.cluster.host_info[0]["pid"]
            os.kill(self.killed, signal.SIGKILL)


def test_a_killed_process_of_virtual_clients_is_restarted_and_every_clients_work_is_kept(tmp_path):
    cfg = TrainConfig(
        method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=3), dataset="digits",
        image_size=16, budgets=(4, 128), epochs_per_budget=(1, 1), lr=0.01, batch_size=16, max_batches=STEPS,
        train_subset=None, test_subset=64, out=str(tmp_path / "run"), progress=False,
    )
    # A CPU cap slows the steps so that the kill (rows reach the driver about a second after
    # their step) lands mid-run, as in tests/test_faults.py.
    cc = ClusterConfig(train=cfg, clients=CLIENTS, clients_per_actor=CLIENTS, materialise=1, max_merge=1,
                       client_cpu=0.15, cap_mechanism="throttle")
    assert cc.failure_policy == "restart"  # the default
    kill = KillHost(after=STEPS + 2)  # in the second epoch: after a recovery point (the first evaluation)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        cluster = Cluster(cc, [kill])
        cluster.start()
        kill.cluster = cluster
        (host,) = cluster.host_info  # one process holds all four
        pid = host["pid"]
        t0 = time.time()
        try:
            summary = cluster.run()
        finally:
            cluster.stop()
    finally:
        ray.shutdown()
    assert kill.killed == pid, "the kill did not happen mid-run"
    assert time.time() - t0 < 60
    assert summary.failed_clients == {}
    assert summary.virtual is not None and summary.virtual["slots"] == 1
    restarted = sorted(e["id"] for e in summary.restarts if e["component"] == "client")
    assert restarted == list(range(CLIENTS)), summary.restarts  # every client of the process was recovered
    steps = pq.read_table(tmp_path / "run" / "steps.parquet").to_pandas()
    for c in range(CLIENTS):
        mine = sorted(steps[steps.client == c]["step"].tolist())
        assert mine == list(range(1, 2 * STEPS + 1)), f"client {c}: gaps or repeats {mine}"
    assert summary.samples == CLIENTS * 2 * STEPS * 16
    evals = pq.read_table(tmp_path / "run" / "evals.parquet").to_pandas()
    assert sorted(set(evals.client)) == list(range(CLIENTS)) and set(evals.epoch) == {0, 1}
