"""End-to-end tests of the Ray runtime (slow: they start a local Ray and actors)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from raysplit import codec
from raysplit.config import SplitConfig, TrainConfig
from raysplit.local import run as run_local
from raysplit.runtime.cluster import Cluster, run_cluster
from raysplit.config.cluster import ClusterConfig

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
        test_subset=128,
        out=str(tmp_path / name),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_one_client_one_shard_computes_what_the_local_trainer_computes(tmp_path):
    tc = train_cfg(tmp_path, "cluster")
    local = run_local(tc.replace(out=str(tmp_path / "local")), progress=False)
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=1, shards=1), progress=False)
    a = pq.read_table(tmp_path / "local" / "steps.parquet").to_pandas()
    b = pq.read_table(tmp_path / "cluster" / "steps.parquet").to_pandas()
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(b["loss"].to_numpy(), a["loss"].to_numpy(), rtol=1e-4, atol=1e-5)
    assert (a["bytes_up"].to_numpy() == b["bytes_up"].to_numpy()).all()
    assert (a["bytes_down"].to_numpy() == b["bytes_down"].to_numpy()).all()
    assert summary["bytes_up"] == local["bytes_up"] and summary["samples"] == local["samples"]
    assert summary["final_test_accuracy"] == pytest.approx(local["final_test_accuracy"], abs=1e-9)


@pytest.mark.parametrize("spec", ["float32", "float16", "int8"])
def test_bytes_are_exact_codec_sizes(tmp_path, spec):
    tc = train_cfg(tmp_path, spec, split=SplitConfig(model="vgg_small", torch_threads=1, codec=spec))
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=2, shards=1), progress=False)
    steps = pq.read_table(tmp_path / spec / "steps.parquet").to_pandas()
    assert summary["bytes_up"] == int(steps["bytes_up"].sum())
    assert summary["bytes_down"] == int(steps["bytes_down"].sum())
    cfg = codec.CodecConfig.parse(spec)
    for _, r in steps.iterrows():
        n = int(r["bytes_up"])
        # digits at 16 px, vgg_small split after [64,M,128,M] -> 128 x 4 x 4
        full = r["budget"] == 128
        for batch in (32, 1438 // 2 % 32 or 32):
            want_up = codec.encoded_size((batch, 128, 4, 4), int(r["budget"]), cfg, with_labels=True, all_channels=full)
            if n == want_up:
                break
        assert n == want_up
        want_down = codec.encoded_size((batch, 128, 4, 4), int(r["budget"]), cfg, with_labels=False, all_channels=full)
        assert int(r["bytes_down"]) == want_down


def test_replicas_agree_after_parameter_averaging_and_allreduce(tmp_path):
    for sync in ("average", "allreduce"):
        tc = train_cfg(tmp_path, sync)
        cluster = Cluster(ClusterConfig(train=tc, clients=4, shards=2, shard_sync=sync, sync_every=2))
        cluster.start(progress=False)
        try:
            cluster.run(progress=False)
            s0, s1 = ray.get([s.state.remote() for s in cluster.shards])
            for k in s0:
                np.testing.assert_allclose(s0[k], s1[k], rtol=1e-6, atol=1e-7, err_msg=f"{sync}: {k}")
            assert cluster.summary()["failed_clients"] == {}
        finally:
            cluster.stop()


def test_splitfed_averages_heads_and_independent_does_not(tmp_path):
    for mode in ("splitfed", "independent"):
        tc = train_cfg(tmp_path, mode)
        cluster = Cluster(ClusterConfig(train=tc, clients=3, mode=mode))
        cluster.start(progress=False)
        try:
            cluster.run(progress=False)
            states = [ray.get(cluster.host_of[c].state.remote(c)) for c in range(3)]
            same = all(np.allclose(states[0][k], s[k]) for s in states[1:] for k in states[0])
            assert same == (mode == "splitfed")
        finally:
            cluster.stop()


def test_a_failing_client_does_not_lose_the_others_work(tmp_path):
    tc = train_cfg(tmp_path, "fault")
    summary, cluster = run_cluster(ClusterConfig(train=tc, clients=3, fail_client=(1, 1)), progress=False)
    assert list(summary["failed_clients"]) == ["1"]
    assert "injected fault" in summary["failed_clients"]["1"]
    steps = pq.read_table(tmp_path / "fault" / "steps.parquet").to_pandas()
    per = steps.groupby(["client", "epoch"]).size().to_dict()
    assert per[(0, 0)] == per[(0, 1)] == per[(2, 1)] == 6
    assert per[(1, 0)] == 6 and (1, 1) not in per  # its epoch-0 work is kept
    assert summary["samples"] == 32 * (6 + 6 + 6 + 6 + 6)


def test_clients_sharing_a_process_fail_alone(tmp_path):
    tc = train_cfg(tmp_path, "shared")
    cc = ClusterConfig(train=tc, clients=4, clients_per_actor=2, fail_client=(1, 1))
    summary, cluster = run_cluster(cc, progress=False)
    assert summary["clients_per_actor"] == 2 and summary["client_actors"] == 2
    assert cluster.host_of[0] is cluster.host_of[1] and cluster.host_of[2] is cluster.host_of[3]
    assert list(summary["failed_clients"]) == ["1"]
    steps = pq.read_table(tmp_path / "shared" / "steps.parquet").to_pandas()
    per = steps.groupby(["client", "epoch"]).size().to_dict()
    # client 0 shares client 1's process and still finishes both epochs
    assert per[(0, 0)] == per[(0, 1)] == per[(1, 0)] == per[(3, 1)] == 6 and (1, 1) not in per


def test_async_policy_walks_each_client_through_the_schedule(tmp_path):
    tc = train_cfg(tmp_path, "async")
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=2, policy="async"), progress=False)
    trans = summary["transitions"]
    assert sorted(t["client"] for t in trans) == [0, 1]
    assert all(t["from_budget"] == 4 and t["to_budget"] == 128 for t in trans)
    epochs = pq.read_table(tmp_path / "async" / "epochs.parquet").to_pandas()
    assert epochs["budget"].tolist() == [4, 128]


def test_shard_merges_microbatches_from_several_clients(tmp_path):
    tc = train_cfg(tmp_path, "merge")
    summary, _ = run_cluster(ClusterConfig(train=tc, clients=6, shards=1), progress=False)
    assert summary["mean_merged_microbatches"] > 1.0
    assert summary["client_actors"] == 6  # auto: 6 processes fit within 4 per CPU (4 CPUs)


def test_throttled_client_paces_itself(tmp_path):
    tc = train_cfg(tmp_path, "cap", epochs_per_budget=(1,), budgets=(4,), method="fixed")
    cluster = Cluster(ClusterConfig(train=tc, clients=1, client_cpu=0.25, cap_mechanism="throttle"))
    cluster.start(progress=False)
    try:
        cluster.run(progress=False)
        info = ray.get(cluster.hosts[0].cap_info.remote())
        assert info["mechanism"] == "throttle"
        # slept enough that compute / (compute + sleep) <= cap (+ slack for the last step)
        assert info["slept_seconds"] >= info["cpu_seconds"] * (1 / 0.25 - 1) * 0.8
    finally:
        cluster.stop()
