"""tools/sizing.py: the sizing model's arithmetic, its table from the committed
measurements, and that the cluster it recommends holds what the driver asks for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import sizing as S  # noqa: E402  (tools/sizing.py: a script, not part of the package)

M = S.Measured(client_cpu_s=0.002, shard_cpu_sps=1000.0, shard_gpu_sps=None, worker_mib=300.0,
               first_client_mib=60.0, client_mib=8.0, idle_mib=2.0, efficiency=0.8)


def test_cpu_bound_when_participants_train_at_device_speed():
    s = S.size(1000, M, S.Assumptions(participation=0.1, device_cpu=0.4))
    assert s.participants == 100
    assert s.target_sps == pytest.approx(100 * 0.4 / 0.002)  # 20,000 samples/s
    assert s.client_cores == pytest.approx(20_000 * 0.002 / 0.8)  # 50 cores
    assert s.client_nodes == 7 and s.bound == "cpu"  # ceil(50 / 8)
    assert s.cpu_shards == 25 and s.cpu_shard_nodes == 4  # ceil(20,000 / (1000 x 0.8)), 8 per node
    assert s.gpu_shard_nodes is None


def test_memory_bound_at_a_fixed_target_and_what_virtual_clients_save():
    a = S.Assumptions(target_sps=1000.0)
    s = S.size(100_000, M, a)
    usable = 16 * 1024 * 0.8
    fixed = 8 * (300 + 60 - 8)
    assert s.bound == "memory" and s.client_nodes == -(-100_000 * 8 // int(usable - fixed))
    v = S.size(100_000, M, S.replace(a, virtual=True))
    assert v.bound == "memory" and v.client_nodes == -(-100_000 * 2 // int(usable - 8 * 360))
    assert v.client_nodes < s.client_nodes and v.client_gib < s.client_gib


def test_virtual_sizing_counts_an_idle_clients_whole_run_memory_when_measured():
    a = S.Assumptions(target_sps=1000.0, virtual=True)
    state_only = S.size(100_000, M, a)
    all_in = S.size(100_000, S.replace(M, idle_all_in_mib=5.0), a)
    usable = 16 * 1024 * 0.8
    assert all_in.client_nodes == -(-100_000 * 5 // int(usable - 8 * 360)) > state_only.client_nodes
    assert S.size(100_000, S.replace(M, idle_all_in_mib=1.0), a).client_nodes == state_only.client_nodes  # the larger
    m = S.load_measured()  # the committed scaling runs measured it
    assert m.idle_all_in_mib is not None and m.idle_all_in_mib > m.idle_mib and "idle client all-in" in m.source
    # their fixed costs per turn: virtual clients need more client cores for the same target
    assert m.virtual_ratio is not None and 0 < m.virtual_ratio < 1 and "virtual throughput" in m.source
    half = S.size(1000, S.replace(M, virtual_ratio=0.5), S.Assumptions(virtual=True))
    assert half.client_cores == pytest.approx(2 * S.size(1000, M, S.Assumptions(virtual=True)).client_cores)


def test_gpu_shards_only_from_a_gpu_measurement():
    s = S.size(1000, S.replace(M, shard_gpu_sps=20_000.0), S.Assumptions())
    assert s.gpu_shard_nodes == 2  # ceil(20,000 / (20,000 x 0.8))


@pytest.mark.parametrize("bad, match", [
    (lambda: S.Assumptions(participation=0), "participation"),
    (lambda: S.Assumptions(target_sps=-1), "target_sps"),
    (lambda: S.replace(M, efficiency=1.5), "efficiency"),
    (lambda: S.size(0, M, S.Assumptions()), "clients"),
    (lambda: S.size(10, M, S.Assumptions(client_node_gib=1)), "client-node-gib"),
])
def test_bad_inputs_say_what_is_wrong(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_table_from_the_committed_measurements(capsys):
    assert S.main([]) == 0
    out = capsys.readouterr().out
    for n in ("1,000", "10,000", "100,000"):
        assert f"| {n.rjust(7)} |" in out
    assert "measured (sizing.json" in out and "assumed:" in out and "not modelled:" in out


def test_the_recommended_cluster_holds_the_drivers_demands():
    """Nodes as the model recommends them (client nodes with their units, CPU shard
    nodes with one shard per core), then the driver's layout for the recommended flags,
    packed by Ray's autoscaler: nothing left over, and no more nodes than recommended."""
    from raysplit.config import ClusterConfig
    from raysplit.runtime.nodes import HEAD_MARK, inventory, layout_for, nodes_to_launch

    s = S.size(1000, S.load_measured(), S.Assumptions())
    config = {"head_node_type": "head", "max_workers": s.client_nodes + s.cpu_shard_nodes, "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "cpu_client": {"resources": {"CPU": 8, "client": 8}, "max_workers": s.client_nodes},
        "cpu_shard": {"resources": {"CPU": 8, "shard": 8}, "max_workers": s.cpu_shard_nodes},
    }}
    nodes = [{"Resources": {"CPU": 0, HEAD_MARK: 1}}]
    nodes += [{"Resources": {"CPU": 8, "client": 8}}] * s.client_nodes
    nodes += [{"Resources": {"CPU": 8, "shard": 8}}] * s.cpu_shard_nodes
    cc = ClusterConfig(clients=s.clients, shards=s.cpu_shards, clients_per_actor=s.clients_per_actor)
    layout = layout_for(cc, inventory(nodes))
    to_add, left = nodes_to_launch(layout.demands(), config)
    assert left == []
    assert to_add.get("cpu_client", 0) <= s.client_nodes and to_add.get("cpu_shard", 0) <= s.cpu_shard_nodes
