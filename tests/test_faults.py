"""Fault injection: real processes of a running cluster are SIGKILLed (slow; a local Ray).

Each test kills one process through its pid (a client's actor, a shard, the scheduler)
while the run trains, and checks that the run completes with every sample counted
exactly once. Two clients on two shards with no merging make a run deterministic, so a
killed run's records and final states can be compared with an uninterrupted one's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
from raysplit.observability.callbacks import Callback
from raysplit.runtime.driver import Cluster

pytestmark = pytest.mark.slow
STEPS = 20  # per client and epoch (2 epochs)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train_cfg(tmp_path, name, **kw) -> TrainConfig:
    base = dict(
        method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=5), dataset="digits",
        image_size=16, budgets=(4, 128), epochs_per_budget=(1, 1), lr=0.01, batch_size=16, max_batches=STEPS,
        train_subset=None, test_subset=64, out=str(tmp_path / name), progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


class KillAt(Callback):
    """SIGKILL ``pid()`` once ``client`` has recorded ``after`` steps (rows reach the driver
    within about a second of the step, so the kill lands mid-epoch)."""

    def __init__(self, pid, client: int = 0, after: int = 3) -> None:
        self.pid, self.client, self.after = pid, client, after
        self.seen, self.killed_at, self.killed_pid = 0, None, None

    def on_steps(self, rows) -> None:
        self.seen += sum(r.client == self.client for r in rows)
        if self.killed_at is None and self.seen >= self.after:
            self.killed_pid = self.pid()
            os.kill(self.killed_pid, signal.SIGKILL)
            self.killed_at = time.time()


def run(cc: ClusterConfig, kill=None):
    cluster = Cluster(cc, [kill] if kill else [])
    cluster.start()
    if kill is not None:
        kill.cluster = cluster  # the callback reaches the actors (pids, shards) through it
    try:
        summary = cluster.run()
        heads = {c: ray.get(cluster.host_of[c].modules_state.remote(c)) for c in cluster.ids}
        tails = ray.get([s.modules_state.remote() for s in cluster.shards])
    finally:
        cluster.stop()
    return summary, heads, tails


def steps_table(path):
    return pq.read_table(path / "steps.parquet").to_pandas().sort_values(["client", "step"]).reset_index(drop=True)


def assert_each_step_once(steps, clients: int, per_client: int) -> None:
    for c in range(clients):
        mine = steps[steps.client == c]
        assert mine["step"].tolist() == list(range(1, per_client + 1)), f"client {c}: gaps or repeats"


def assert_same_states(a: dict, b: dict) -> None:
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every fault run is compared with."""
    tmp = tmp_path_factory.mktemp("ref")
    cc = ClusterConfig(train=train_cfg(tmp, "ref"), clients=2, shards=2, max_merge=1, sync_every=10,
                       client_cpu=0.15, cap_mechanism="throttle")
    summary, heads, tails = run(cc)
    return cc, summary, heads, tails, steps_table(tmp / "ref")


def test_a_killed_client_restarts_replays_and_ends_exactly_where_an_uninterrupted_run_does(tmp_path, reference):
    cc0, ref, ref_heads, ref_tails, ref_steps = reference
    cc = cc0.replace(train=cc0.train.replace(out=str(tmp_path / "kill")))
    kill = KillAt(lambda: kill.cluster.host_info[1]["pid"], client=1, after=8)
    summary, heads, tails = run(cc, kill)
    assert kill.killed_at is not None
    assert summary.failed_clients == {}
    (event,) = [e for e in summary.restarts if e["component"] == "client"]
    assert event["id"] == 1 and "recovery point" in event["detail"] or "initial state" in event["detail"]
    steps = steps_table(tmp_path / "kill")
    assert_each_step_once(steps, 2, 2 * STEPS)
    assert summary.samples == ref.samples and summary.bytes_up == ref.bytes_up
    assert summary.bytes_down == ref.bytes_down
    np.testing.assert_allclose(steps["loss"].to_numpy(), ref_steps["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    for c in (0, 1):
        assert_same_states(heads[c], ref_heads[c])
    for a, b in zip(tails, ref_tails):
        assert_same_states(a, b)


def test_a_killed_shard_restarts_from_its_snapshot_and_resynchronises_every_sample_counted_once(tmp_path, reference):
    cc0, ref, _, _, _ = reference
    cc = cc0.replace(train=cc0.train.replace(out=str(tmp_path / "shard")))
    kill = KillAt(lambda: kill.cluster.shard_info[1]["pid"], client=1, after=STEPS + 6)  # in epoch 1
    summary, _, tails = run(cc, kill)
    assert kill.killed_at is not None
    assert summary.failed_clients == {}
    (event,) = [e for e in summary.restarts if e["component"] == "shard"]
    assert event["id"] == 1 and "snapshot" in event["detail"] and "replica 0" in event["detail"]
    assert_each_step_once(steps_table(tmp_path / "shard"), 2, 2 * STEPS)
    assert (summary.samples, summary.bytes_up, summary.bytes_down) == (ref.samples, ref.bytes_up, ref.bytes_down)
    assert_same_states(tails[0], tails[1])  # replicas equal again at the end


def test_a_killed_scheduler_restarts_with_its_state_and_the_run_is_unchanged(tmp_path, reference):
    cc0, ref, ref_heads, ref_tails, ref_steps = reference
    cc = cc0.replace(train=cc0.train.replace(out=str(tmp_path / "sched")))
    kill = KillAt(lambda: ray.get(kill.cluster.scheduler.pid.remote()), client=0, after=14)
    summary, heads, tails = run(cc, kill)
    assert kill.killed_at is not None
    assert summary.failed_clients == {}
    (event,) = [e for e in summary.restarts if e["component"] == "scheduler"]
    assert "journal" in event["detail"]
    steps = steps_table(tmp_path / "sched")
    assert_each_step_once(steps, 2, 2 * STEPS)
    assert steps["budget"].tolist() == ref_steps["budget"].tolist()  # the budget schedule went on
    assert summary.transitions == ref.transitions or [
        {k: t[k] for k in ("epoch", "from_budget", "to_budget")} for t in summary.transitions] == [
        {k: t[k] for k in ("epoch", "from_budget", "to_budget")} for t in ref.transitions]
    np.testing.assert_allclose(steps["loss"].to_numpy(), ref_steps["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    for c in (0, 1):
        assert_same_states(heads[c], ref_heads[c])


def job_args(out, *extra) -> list[str]:
    """jobs/deprune.py with the reference run's configuration, on this test's Ray."""
    return [sys.executable, "jobs/deprune.py", "--address", ray.get_runtime_context().gcs_address, "--dataset",
            "digits", "--image-size", "16", "--method", "deprune", "--budgets", "4,128", "--epochs-per-budget", "1,1",
            "--lr", "0.01", "--batch-size", "16", "--max-batches", str(STEPS), "--train-subset", "all", "--test-subset",
            "64", "--seed", "5", "--threads", "1", "--clients", "2", "--shards", "2", "--max-merge", "1",
            "--sync-every", "10", "--client-cpu", "0.15", "--cap-mechanism", "throttle", "--no-progress", "--out",
            str(out), *extra]


def wait_for(cond, timeout: float, what: str) -> None:
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_killed_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path, reference):
    _, ref, _, _, ref_steps = reference
    out = tmp_path / "job"
    log = open(tmp_path / "job.log", "w")
    # Clients do not wait for the checkpoint's write, so the run that is killed is capped
    # lower, for the kill to land in epoch 1 on a busy machine too; the cap only says how it
    # runs (the resumed run goes back to the reference's), not what it computes.
    job = subprocess.Popen(job_args(out, "--checkpoint-every", "1", "--client-cpu", "0.05"), cwd=REPO, stdout=log,
                           stderr=log, start_new_session=True)
    try:
        wait_for(lambda: (out / "checkpoints" / "epoch_0" / "state.pt").is_file(), 240, "the epoch-0 checkpoint")
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the whole job: driver and everything it started
        job.wait()
    killed = pq.read_table(out / "steps.parquet").num_rows
    assert 2 * STEPS <= killed < 4 * STEPS and not (out / "summary.json").exists()
    res = subprocess.run(job_args(out, "--resume", str(out)), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "resuming" in res.stdout and "from epoch_0" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] == "checkpoints/epoch_0" and summary["failed_clients"] == {}
    steps = steps_table(out)
    assert_each_step_once(steps, 2, 2 * STEPS)  # no gap, no repeat across the kill
    assert (summary["samples"], summary["bytes_up"], summary["bytes_down"]) == (ref.samples, ref.bytes_up,
                                                                                ref.bytes_down)
    np.testing.assert_allclose(steps["loss"].to_numpy(), ref_steps["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    assert epochs["epoch"].tolist() == [0, 1] and epochs["samples"].tolist() == [2 * 16 * STEPS] * 2
    assert summary["final_test_accuracy"] == pytest.approx(ref.final_test_accuracy, abs=1e-9)


class Attack(Callback):
    """Once training runs, fires hostile messages at shard 1 (as another tenant, as a
    compromised client of this one, and plain garbage) and keeps the calls."""

    def __init__(self, secret: bytes) -> None:
        self.secret, self.calls = secret, None

    def on_steps(self, rows) -> None:
        if self.calls is not None:
            return
        from raysplit import codec
        from raysplit.identity import tenant_key
        from raysplit.keys import Keyring
        from raysplit.training.client import SplitClient

        shard = self.cluster.shards[1]
        split = self.cluster.cfg.split
        mine, theirs = Keyring(self.secret, "default"), Keyring(os.urandom(32), "other")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, *split.input_shape)).astype(np.float32)

        def msg(ring, tenant, client=1, step=10**6, cfg=split, budget=None):
            c = SplitClient(cfg, client, tenant_key=tenant_key(tenant), key=ring.client_key(client))
            c.step = step
            if budget is not None:
                c.set_budget(budget)
            return c.forward(x if cfg is split else np.zeros((16, 1, 32, 32), np.float32), np.arange(16) % 10)

        ok = msg(mine, "default")
        nan = codec.encode(np.full((16, 4, 4, 4), np.nan, np.float32), np.arange(4), (16, 128, 4, 4),
                           codec.CodecConfig(allow_nonfinite=True), labels=np.arange(16) % 10, step=10**6 + 1,
                           client_id=1, tenant=tenant_key("default"), cut=split.split_layer,
                           key=mine.client_key(1))
        mid = len(ok) // 2
        bad = {  # another tenant; the tenant's name with a guessed key; a tag altered
            "unauthenticated": [msg(theirs, "other"), msg(theirs, "default"), ok[:-1] + bytes([ok[-1] ^ 1])],
            "malformed": [b"garbage", ok[:mid], ok[:mid] + bytes([ok[mid] ^ 1]) + ok[mid + 1:]],  # cut; corrupted
            "oversized": [b"RSPL\x03" + bytes(10**6)],
            "client": [msg(mine, "default", client=0)],  # client 0 trains on shard 0
            # 32x32 images: an (128, 8, 8) tail input, at budget 4 so that it is not oversized too
            "shape": [msg(mine, "default", cfg=split.replace(input_shape=(1, 32, 32)), budget=4)],
            "nonfinite": [nan],
        }
        self.calls = {reason: [shard.train.remote(b, 0.01, 0) for b in bufs] for reason, bufs in bad.items()}
        # step 1 of client 1 again (signed: a compromised client): answered from the log, not applied
        self.replay = shard.train.remote(msg(mine, "default", step=0), 0.01, 0)


def test_hostile_messages_at_a_running_shard_are_refused_counted_and_change_nothing(tmp_path, reference):
    from raysplit.keys import read_secret_file, write_secret_file
    from raysplit.training.guards import Refused

    cc0, ref, ref_heads, ref_tails, ref_steps = reference
    key = write_secret_file(tmp_path / "tenant.key")
    cc = cc0.replace(train=cc0.train.replace(out=str(tmp_path / "attack"), tenant_key_file=str(key)))
    attack = Attack(read_secret_file(key))
    summary, heads, tails = run(cc, attack)
    for reason, refs in attack.calls.items():
        for r in refs:
            with pytest.raises(Refused) as e:
                ray.get(r)
            assert e.value.reason == reason
    assert summary.rejected_messages == {r: len(v) for r, v in attack.calls.items()}
    first = ref_steps[(ref_steps.client == 1) & (ref_steps.step == 1)]["loss"].item()
    assert ray.get(attack.replay).result.loss == pytest.approx(first, rel=1e-5)  # its first reply, nothing more
    steps = steps_table(tmp_path / "attack")
    assert_each_step_once(steps, 2, 2 * STEPS)
    np.testing.assert_allclose(steps["loss"].to_numpy(), ref_steps["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(tails, ref_tails):  # the attack changed nothing: the run is the uninterrupted one
        assert_same_states(a, b)


class KillAndLabel(KillAt):
    """KillAt, and once training runs one labelled message (signed by client 1) at shard 1."""

    labelled = None

    def on_steps(self, rows) -> None:
        if self.labelled is None:
            from raysplit import codec
            from raysplit.identity import tenant_key

            split = self.cluster.cfg.split
            buf = codec.encode(np.ones((16, 4, 4, 4), np.float32), np.arange(4), (16, 128, 4, 4), codec.CodecConfig(),
                               labels=np.arange(16) % 10, step=10**6 + 1, client_id=1, tenant=tenant_key("default"),
                               cut=split.split_layer, key=self.ring.client_key(1))
            self.labelled = self.cluster.shards[1].train.remote(buf, 0.01, 0)
        super().on_steps(rows)


def test_a_ushaped_cluster_run_keeps_its_labels_and_survives_a_killed_client(tmp_path):
    """Label-private mode as the cluster runs it: a shard refuses (and counts) a labelled
    message; a client killed mid-epoch restarts and replays its two-round-trip steps."""
    from raysplit.keys import Keyring, read_secret_file, write_secret_file
    from raysplit.training.guards import Refused

    key = write_secret_file(tmp_path / "tenant.key")
    cc = ClusterConfig(train=train_cfg(tmp_path, "u", tenant_key_file=str(key)), clients=2, shards=2,
                       mode="ushaped", client_cpu=0.15, cap_mechanism="throttle")
    kill = KillAndLabel(lambda: kill.cluster.host_info[1]["pid"], client=1, after=8)
    kill.ring = Keyring(read_secret_file(key), "default")
    summary, heads, _ = run(cc, kill)
    with pytest.raises(Refused) as e:
        ray.get(kill.labelled)
    assert e.value.reason == "labels"
    assert summary.rejected_messages == {"labels": 1}  # and nothing else: no legitimate message carried labels
    assert summary.failed_clients == {}
    (event,) = [e for e in summary.restarts if e["component"] == "client"]
    assert event["id"] == 1
    steps = steps_table(tmp_path / "u")
    assert_each_step_once(steps, 2, 2 * STEPS)
    assert steps.groupby("epoch")["loss"].mean().is_monotonic_decreasing
    assert list(heads[0].values())[-1].shape == (10,)  # the client holds the last layers: the classifier
