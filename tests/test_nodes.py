"""The placement plan (raysplit.runtime.nodes): pure functions of the config and the cluster."""

from __future__ import annotations

import pytest

from raysplit.config import ClusterConfig
from raysplit.runtime.nodes import Inventory, host_groups, inventory, layout_for, plan_layout


def node(cpu, alive=True, **res):
    return {"Alive": alive, "Resources": {"CPU": cpu, **res}}


def plan(inv, **kw):
    base = dict(clients=8, shards=1, clients_per_actor="auto", client_cpu=None, shard_cpus=1.0,
                shard_device="auto", placement="default", node_types="auto")
    base.update(kw)
    return plan_layout(inv=inv, **base)


def test_inventory_sums_alive_nodes_by_kind():
    inv = inventory([node(0), node(4, GPU=1, shard=1), node(8, client=8), node(8, client=8),
                     node(8, alive=False, client=8)])
    assert inv == Inventory(cpus=20, gpus=1, client_cpus=16, client_units=16, shard_units=1, shard_gpus=1)
    # an autoscaler that can add nodes: the head plus every node type at its maximum
    head = node(0, **{"node:__internal_head__": 1})
    grown = inventory([head, node(8, client=8)], [({"CPU": 4, "GPU": 1, "shard": 1}, 4), ({"CPU": 8, "client": 8}, 4)])
    assert grown.autoscaler and len(grown.nodes) == 1 + 8
    assert (grown.shard_units, grown.shard_gpus, grown.client_units, grown.client_cpus) == (4, 4, 32, 32)


def test_one_machine_without_node_types_keeps_the_old_plan():
    lay = plan(Inventory(cpus=2), clients=32)
    assert lay.node_types == (False, False) and not lay.groups
    assert lay.clients_per_actor == 4 and len(lay.hosts) == 8  # 4 processes per CPU
    assert lay.shard_resources == {"CPU": 1.0}
    assert all("client" not in r for r in lay.host_resources)


def test_node_types_ask_for_shard_and_client_units():
    inv = inventory([node(0), node(4, GPU=1, shard=1), node(4, GPU=1, shard=1)]
                    + [node(8, client=8) for _ in range(4)])
    lay = plan(inv, clients=32, shards=2)
    assert lay.node_types == (True, True) and lay.use_gpu
    assert lay.shard_resources == {"CPU": 1.0, "GPU": 1, "shard": 1}
    assert len(lay.hosts) == 32 and all(r["client"] == 1 for r in lay.host_resources)
    # the shards' CPUs are on other nodes: clients keep their whole 0.25 share
    assert lay.client_num_cpus == 0.25
    # 1024 clients on 32 client units: 32 processes of 32, not 4 x 32 CPUs of processes
    big = plan(inv, clients=1024, shards=2)
    assert len(big.hosts) == 32 and big.clients_per_actor == 32


def test_a_fixed_cluster_that_cannot_hold_the_actors_is_refused_up_front():
    inv = inventory([node(0), node(2, shard=1), node(2, client=2)])
    with pytest.raises(ValueError, match="2 shard actors need 2 'shard' resource units .* declare 1"):
        plan(inv, clients=4, shards=2)
    with pytest.raises(ValueError, match="4 client actors need 4 'client' .*raise --clients-per-actor"):
        plan(inv, clients=4, clients_per_actor=1)
    assert len(plan(inv, clients=4).hosts) == 2  # auto fits the units


def test_always_plans_for_nodes_that_do_not_exist_yet():
    lay = plan(inventory([node(0)]), clients=32, shards=2, node_types="always", clients_per_actor=1)
    assert lay.shard_resources["shard"] == 1 and len(lay.hosts) == 32
    lay = plan(inventory([node(0)]), clients=32, node_types="always")
    assert any("set --clients-per-actor" in n for n in lay.notes)


def test_colocate_groups_hosts_by_shard_in_pack_groups():
    # tests/test_multinode.py's cluster: a shard node, two client nodes, one node with both
    inv = inventory([node(0), node(1, shard=1), node(1, client=2), node(1, client=2), node(2, shard=1, client=1)])
    lay = plan(inv, clients=4, shards=2, clients_per_actor=2, placement="colocate")
    assert lay.hosts == ((0, 2), (1, 3))  # every host talks to one shard (c % shards)
    # the first group fits one node whole (STRICT_PACK); then no node can hold the second
    assert [g.strategy for g in lay.groups] == ["STRICT_PACK", "PACK"]
    assert any("no node can hold shard 1" in n for n in lay.notes)
    assert [g.members for g in lay.groups] == [(("shard", 0), ("host", 0)), (("shard", 1), ("host", 1))]
    assert lay.groups[0].bundles == ({"CPU": 1.0, "shard": 1}, {"CPU": 0.5, "client": 1})
    # both kinds share those nodes' CPUs: the clients' share leaves room for the shards
    assert plan(inv, clients=8, shards=2, placement="colocate").client_num_cpus == pytest.approx(0.225, abs=1e-3)


def test_spread_is_one_group_over_every_actor_and_bundles_are_never_empty():
    lay = plan(Inventory(cpus=1), clients=64, placement="spread")
    (g,) = lay.groups
    assert g.strategy == "SPREAD" and len(g.bundles) == 1 + len(lay.hosts)
    assert all(any(v > 0 for v in b.values()) for b in g.bundles)  # Ray refuses all-zero bundles


def test_host_groups():
    assert host_groups(5, 2, 2, by_shard=False) == [(0, 1), (2, 3), (4,)]
    assert host_groups(5, 2, 2, by_shard=True) == [(0, 2), (4,), (1, 3)]
    with pytest.raises(ValueError, match=">= 1"):
        host_groups(4, 1, 0, by_shard=False)


def test_config_checks_the_placement_options():
    cc = ClusterConfig(placement="spread", node_types="never")
    assert layout_for(cc, Inventory(cpus=4)).placement == "spread"
    for bad in (dict(placement="pack"), dict(node_types="sometimes"), dict(placement_timeout=0)):
        with pytest.raises(ValueError, match="placement|node_types"):
            ClusterConfig(**bad)
