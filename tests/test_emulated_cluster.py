"""The emulated network end to end on the Ray runtime (slow: a local Ray, real training).

* virtual mode is deterministic for a seed (two runs, the same simulated clock per step);
* realtime wall time and virtual simulated time agree within 10 % on the same run shape;
* the adaptive policy lowers the budget of clients on a slow link.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from raysplit.budget.policies import AdaptiveConfig
from raysplit.config import ClusterConfig, LinkConfig, SplitConfig, TrainConfig
from raysplit.local import run as run_local
from raysplit.runtime.driver import run_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def cfg(tmp_path, name, link: LinkConfig, **kw) -> TrainConfig:
    base = dict(method="fixed", split=SplitConfig(model="vgg_small", torch_threads=1, seed=5), dataset="digits",
                image_size=16, budgets=(128,), epochs_per_budget=(2,), batch_size=32, max_batches=3,
                train_subset=None, test_subset=64, out=str(tmp_path / name), progress=False, link=link)
    base.update(kw)
    return TrainConfig(**base)


def steps(tmp_path, name):
    return pq.read_table(tmp_path / name / "steps.parquet").to_pandas().sort_values(["client", "step"])


def test_virtual_mode_is_deterministic_for_a_seed(tmp_path):
    link = LinkConfig(link="wifi,ge=2%/30%", cell="20mbit", sim_compute="model", target_accuracy=0.05)
    runs = []
    for name in ("a", "b"):
        s, _ = run_cluster(ClusterConfig(train=cfg(tmp_path, name, link), clients=2))
        runs.append((s, steps(tmp_path, name)))
    (sa, a), (sb, b) = runs
    cols = ["client", "step", "compute_s", "uplink_s", "sim_server_s", "downlink_s", "sim_time", "wire_bytes_up",
            "wire_bytes_down"]
    assert len(a) == 12 and a[cols].to_numpy().tolist() == b[cols].to_numpy().tolist()
    assert sa.sim_seconds == sb.sim_seconds == pytest.approx(a["sim_time"].max())
    assert (a["wire_bytes_up"] > a["bytes_up"]).all()  # headers (and retransmissions)
    assert sa.time_to_accuracy is not None and sa.link_mode == "virtual" and len(sa.links) == 1
    epochs = pq.read_table(tmp_path / "a" / "epochs.parquet").to_pandas()
    assert epochs["sim_time"].is_monotonic_increasing
    assert (tmp_path / "a" / "accuracy_time.png").exists() and (tmp_path / "a" / "bytes_clients.png").exists()
    # the two clients share the cell: a step's uplink takes longer than the message alone would
    alone = a["wire_bytes_up"] * 8 / 20e6
    assert (a["uplink_s"] > alone).all()


def test_realtime_wall_time_matches_virtual_simulated_time(tmp_path):
    """Same run shape, link-bound: 2 clients on a shared 4 Mbit/s cell, 64 KiB messages."""
    link = dict(link="20mbit/5ms", cell="4mbit", sim_compute="measured")
    sv, _ = run_cluster(ClusterConfig(train=cfg(tmp_path, "virtual", LinkConfig(**link, link_mode="virtual")),
                                      clients=2))
    sr, _ = run_cluster(ClusterConfig(train=cfg(tmp_path, "realtime", LinkConfig(**link, link_mode="realtime")),
                                      clients=2))
    print(f"realtime {sr.sim_seconds:.3f} s (wall training {sr.train_seconds:.2f} s) vs virtual "
          f"{sv.sim_seconds:.3f} s: {sr.sim_seconds / sv.sim_seconds - 1:+.1%}")
    assert sv.sim_seconds > 2.0  # the link dominates: ~0.5 s per step
    assert sr.sim_seconds == pytest.approx(sv.sim_seconds, rel=0.10)
    assert sr.train_seconds >= sr.sim_seconds  # realtime really waited
    rv, rr = steps(tmp_path, "virtual"), steps(tmp_path, "realtime")
    assert (rr["latency"] > rr["uplink_s"] + rr["downlink_s"]).all()  # the wall step includes the link
    assert rr["uplink_s"].median() == pytest.approx(rv["uplink_s"].median(), rel=0.15)


def test_adaptive_policy_lowers_the_budget_on_a_slow_link(tmp_path):
    link = LinkConfig(link="2mbit/10ms", cell="none")
    cc = ClusterConfig(train=cfg(tmp_path, "adaptive", link, max_batches=4), clients=2, policy="adaptive",
                       adaptive=AdaptiveConfig(target_step_s=0.15, adapt_every=2))
    s, _ = run_cluster(cc)
    rows = steps(tmp_path, "adaptive")
    first = rows.groupby("client")["budget"].first()
    last = rows.groupby("client")["budget"].last()
    assert (first == 128).all() and (last < 128).all()
    assert s.transitions and all(t["client"] is not None for t in s.transitions)
    # its steps now fit the target (what it chose for)
    late = rows[rows["budget"] == last[rows["client"]].to_numpy()]
    assert (late["sim_time"].diff().dropna().abs().median()) < 0.3
    assert json.loads((tmp_path / "adaptive" / "summary.json").read_text())["policy"] == "adaptive"


def test_local_trainer_with_a_link_matches_one_cluster_client(tmp_path):
    link = LinkConfig(link="lte", sim_compute="model")
    local = run_local(cfg(tmp_path, "local", link))
    s, _ = run_cluster(ClusterConfig(train=cfg(tmp_path, "one", link), clients=1))
    a, b = steps(tmp_path, "local"), steps(tmp_path, "one")
    np.testing.assert_allclose(a["sim_time"], b["sim_time"], rtol=1e-9)
    assert local.sim_seconds == pytest.approx(s.sim_seconds)
