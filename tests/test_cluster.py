"""End-to-end tests of the Ray runtime (slow: they start a local Ray and actors)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from raysplit import codec
from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
from raysplit.data import load_dataset
from raysplit.inference import load_model
from raysplit.local import run as run_local
from raysplit.observability.callbacks import Callback
from raysplit.runtime.checkpoint import load_checkpoint
from raysplit.runtime.driver import Cluster, run_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train_cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(
        method="deprune",
        split=SplitConfig(model="vgg_small", torch_threads=1, seed=3),
        dataset="digits",
        image_size=16,
        budgets=(4, 128),
        epochs_per_budget=(1, 1),
        lr=0.01,
        batch_size=32,
        max_batches=6,
        train_subset=None,
        test_subset=128,
        out=str(tmp_path / name),
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def table(path, name):
    return pq.read_table(path / name).to_pandas()


@pytest.fixture(scope="module")
def one_client(tmp_path_factory):
    """One client on one shard (float32 codec) and the local trainer on the same config:
    the run directory two tests read."""
    tmp = tmp_path_factory.mktemp("one")
    tc = train_cfg(tmp, "cluster")
    local = run_local(tc.replace(out=str(tmp / "local")))
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=1, shards=1))
    return tmp, local, summary


def test_one_client_one_shard_computes_what_the_local_trainer_computes(one_client):
    tmp_path, local, summary = one_client
    a, b = table(tmp_path / "local", "steps.parquet"), table(tmp_path / "cluster", "steps.parquet")
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(b["loss"].to_numpy(), a["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    assert (a["bytes_up"].to_numpy() == b["bytes_up"].to_numpy()).all()
    assert (a["bytes_down"].to_numpy() == b["bytes_down"].to_numpy()).all()
    assert summary.bytes_up == local.bytes_up and summary.samples == local.samples
    assert summary.final_test_accuracy == pytest.approx(local.final_test_accuracy, abs=1e-9)
    assert list(a.columns) == list(b.columns)  # one schema


@pytest.mark.parametrize("spec", ["float32", "float16", "int8"])
def test_bytes_are_exact_codec_sizes(tmp_path, spec, one_client):
    if spec == "float32":  # the default codec: the one-client run's records (one cluster less to start)
        tmp_path, _, summary = one_client
        steps = table(tmp_path / "cluster", "steps.parquet")
    else:
        tc = train_cfg(tmp_path, spec, split=SplitConfig(model="vgg_small", torch_threads=1, codec=spec))
        summary, _ = run_cluster(ClusterConfig(train=tc, clients=2, shards=1))
        steps = table(tmp_path / spec, "steps.parquet")
    assert summary.bytes_up == int(steps["bytes_up"].sum())
    assert summary.bytes_down == int(steps["bytes_down"].sum())
    cfg = codec.CodecConfig.parse(spec)
    for _, r in steps.iterrows():
        # digits at 16 px, vgg_small split after [64,M,128,M] -> 128 x 4 x 4
        full, n = r["budget"] == 128, int(r["samples"])
        # every message carries its client's HMAC tag (raysplit/keys.py)
        assert r["bytes_up"] == codec.encoded_size((n, 128, 4, 4), int(r["budget"]), cfg, with_labels=True,
                                                   all_channels=full, keyed=True)
        assert r["bytes_down"] == codec.encoded_size((n, 128, 4, 4), int(r["budget"]), cfg, with_labels=False,
                                                     all_channels=full, keyed=True)


def test_replicas_agree_after_parameter_averaging_and_allreduce(tmp_path):
    for sync in ("average", "allreduce"):
        tc = train_cfg(tmp_path, sync)
        cluster = Cluster(ClusterConfig(train=tc, clients=4, shards=2, shard_sync=sync, sync_every=2))
        cluster.start()
        try:
            summary = cluster.run()
            s0, s1 = ray.get([s.modules_state.remote() for s in cluster.shards])
            for k in s0:
                np.testing.assert_allclose(s0[k], s1[k], rtol=1e-6, atol=1e-7, err_msg=f"{sync}: {k}")
            assert summary.failed_clients == {}
        finally:
            cluster.stop()


def test_splitfed_averages_heads_and_evaluates_each_share_once(tmp_path):
    for mode in ("splitfed", "independent"):
        tc = train_cfg(tmp_path, mode)
        cluster = Cluster(ClusterConfig(train=tc, clients=3, mode=mode))
        cluster.start()
        try:
            cluster.run()
            states = [ray.get(cluster.host_of[c].modules_state.remote(c)) for c in range(3)]
            same = all(np.allclose(states[0][k], s[k]) for s in states[1:] for k in states[0])
            assert same == (mode == "splitfed")
        finally:
            cluster.stop()
        evals = table(tmp_path / mode, "evals.parquet")
        # the three shares cover the 128 test images once per epoch
        assert evals.groupby("epoch")["total"].sum().tolist() == [128, 128]
        assert sorted(evals["client"].unique()) == [0, 1, 2]


def test_a_failing_client_does_not_lose_the_others_work(tmp_path):
    tc = train_cfg(tmp_path, "fault")
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=3, fail_client=(1, 1)))
    assert list(summary.failed_clients) == ["1"]
    assert "injected fault" in summary.failed_clients["1"]
    steps = table(tmp_path / "fault", "steps.parquet")
    per = steps.groupby(["client", "epoch"]).size().to_dict()
    assert per[(0, 0)] == per[(0, 1)] == per[(2, 1)] == 6
    assert per[(1, 0)] == 6 and (1, 1) not in per  # its epoch-0 work is kept
    assert summary.samples == 32 * (6 + 6 + 6 + 6 + 6)
    epochs = table(tmp_path / "fault", "epochs.parquet")
    assert epochs["clients"].tolist() == [3, 2]


def test_clients_sharing_a_process_fail_alone(tmp_path):
    tc = train_cfg(tmp_path, "shared")
    summary, cluster = run_cluster(ClusterConfig(train=tc, clients=4, clients_per_actor=2, fail_client=(1, 1)))
    assert summary.clients_per_actor == 2 and summary.client_actors == 2
    assert cluster.host_of[0] is cluster.host_of[1] and cluster.host_of[2] is cluster.host_of[3]
    assert list(summary.failed_clients) == ["1"]
    per = table(tmp_path / "shared", "steps.parquet").groupby(["client", "epoch"]).size().to_dict()
    # client 0 shares client 1's process and still finishes both epochs
    assert per[(0, 0)] == per[(0, 1)] == per[(1, 0)] == per[(3, 1)] == 6 and (1, 1) not in per


def test_async_policy_walks_each_client_through_the_schedule(tmp_path):
    tc = train_cfg(tmp_path, "async")
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=2, policy="async"))
    trans = summary.transitions
    assert sorted(t["client"] for t in trans) == [0, 1]
    assert all(t["from_budget"] == 4 and t["to_budget"] == 128 for t in trans)
    assert table(tmp_path / "async", "epochs.parquet")["budget"].tolist() == [4, 128]


def test_shard_merges_microbatches_from_several_clients(tmp_path):
    tc = train_cfg(tmp_path, "merge")
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=6, shards=1))
    assert summary.mean_merged_microbatches > 1.0
    assert summary.client_actors == 6  # auto: 6 processes fit within 4 per CPU (4 CPUs)
    steps = table(tmp_path / "merge", "steps.parquet")
    assert steps["merged"].max() > 1 and (steps["queue_s"] >= 0).all()


def test_prune_on_the_cluster_saves_one_loadable_model_per_budget(tmp_path):
    tc = train_cfg(tmp_path, "prune", method="prune", budgets=(128, 8), epochs_per_budget=(1,), evaluate="full")
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=2))
    assert summary.models == ["models/budget_128.pt", "models/budget_8.pt"]
    evals = table(tmp_path / "prune", "evals.parquet")
    test = load_dataset("digits", "test", limit=128, image_size=16, seed=3)  # the run's test subset (seed 3)
    for budget, epoch in ((128, 0), (8, 1)):
        for client in (0, 1):
            m = load_model(tmp_path / "prune" / "models" / f"budget_{budget}.pt", client=client)
            assert m.budget == budget and m.clients == (0, 1)
            want = evals[(evals.epoch == epoch) & (evals.client == client)].iloc[0]
            assert m.accuracy(test, batch_size=32) == pytest.approx(want["correct"] / want["total"])


def test_checkpoints_on_the_cluster_hold_clients_shards_and_scheduler(tmp_path):
    tc = train_cfg(tmp_path, "ckpt", checkpoint_every=1)
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=2, shards=2))
    assert summary.checkpoints == ["checkpoints/epoch_0", "checkpoints/epoch_1"]
    ck = load_checkpoint(tmp_path / "ckpt" / "checkpoints" / "epoch_0")
    assert sorted(ck["clients"]) == [0, 1] and len(ck["shards"]) == 2
    assert all(c["client"]["step"] == 6 and c["batch"] == 6 for c in ck["clients"].values())
    assert ck["scheduler"]["policy"]["epoch"] == 1


class Recorder(Callback):
    def __init__(self):
        self.calls, self.epochs, self.ended = [], [], None

    def on_steps(self, rows):
        self.calls.append((time.monotonic(), len(rows), {r.tenant for r in rows}))

    def on_epoch(self, row):
        self.epochs.append(row)

    def on_run_end(self, summary):
        self.ended = time.monotonic()


def test_records_arrive_while_the_run_goes_and_carry_its_identity(tmp_path):
    tc = train_cfg(tmp_path, "live", max_batches=20, tenant="acme", run_id="live-1")
    rec = Recorder()
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=2), callbacks=[rec])
    assert summary.run == "live-1" and summary.tenant == "acme"
    assert sum(n for _, n, _ in rec.calls) == summary.steps
    assert len(rec.calls) >= 3  # step rows came in several batches, not at the end
    assert rec.calls[0][0] < rec.ended - 1.0
    assert {t for _, _, ts in rec.calls for t in ts} == {"acme"}
    assert [e.epoch for e in rec.epochs] == [0, 1]
    steps = table(tmp_path / "live", "steps.parquet")
    assert set(steps["run"]) == {"live-1"} and set(steps["tenant"]) == {"acme"}


def test_throttled_client_paces_itself(tmp_path):
    tc = train_cfg(tmp_path, "cap", epochs_per_budget=(1,), budgets=(4,), method="fixed")
    cluster = Cluster(ClusterConfig(train=tc, clients=1, client_cpu=0.25, cap_mechanism="throttle"))
    cluster.start()
    try:
        cluster.run()
        info = ray.get(cluster.hosts[0].cap_info.remote())
        assert info["mechanism"] == "throttle"
        # slept enough that compute / (compute + sleep) <= cap (+ slack for the last step)
        assert info["slept_seconds"] >= info["cpu_seconds"] * (1 / 0.25 - 1) * 0.8
    finally:
        cluster.stop()
