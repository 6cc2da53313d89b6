"""A multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: one raylet per
"node", each with its own resources), shaped like cluster.yaml: a head with no CPUs, shard
nodes declaring ``shard``, client nodes declaring ``client``, and one node declaring both.
The tests assert where every actor landed and that the runs complete; the last one
removes a client node in the middle of a run.
"""

from __future__ import annotations

import os
import time

import pyarrow.parquet as pq
import pytest
import ray

from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
from raysplit.observability.callbacks import Callback
from raysplit.runtime.driver import Cluster, run_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    from ray.cluster_utils import Cluster as RayCluster

    # Its own temp dir: Cluster() writes the address file that a bare ray.init() on this
    # machine would join; under RAY_TMPDIR it is out of everyone else's way.
    tmp = f"/tmp/rs-scale-{os.getpid()}"
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    os.makedirs(tmp, exist_ok=True)
    c = RayCluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False))
    named = {"head": c.head_node}
    named["shard"] = c.add_node(num_cpus=1, resources={"shard": 1})  # a GPU node on a cloud
    named["client1"] = c.add_node(num_cpus=1, resources={"client": 2})
    named["client2"] = c.add_node(num_cpus=1, resources={"client": 2})
    named["both"] = c.add_node(num_cpus=2, resources={"shard": 1, "client": 1})  # an edge box with both
    ray.init(address=c.address, log_to_driver=False)
    ids = {name: n.node_id for name, n in named.items()}
    yield c, named, ids
    ray.shutdown()
    c.shutdown()
    if old is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old


def train_cfg(tmp_path, name, **kw) -> TrainConfig:
    base = dict(method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=3), dataset="digits",
                image_size=16, budgets=(4, 128), epochs_per_budget=(1, 1), batch_size=32, max_batches=2,
                test_subset=64, out=str(tmp_path / name), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def actor_nodes(cluster: Cluster) -> dict:
    """Each actor's node as the actor itself reports it (from inside its process)."""
    return {
        "shards": [s["node"] for s in cluster.shard_info],
        "hosts": {tuple(h["clients"]): h["node"] for h in cluster.host_info},
    }


def gcs_node(actor) -> str:
    """An actor's node from the GCS actor table (not from the actor)."""
    return ray._private.state.actors(actor._actor_id.hex())["Address"]["NodeID"]


def test_node_types_put_shards_and_clients_on_their_nodes(nodes, tmp_path):
    _, _, ids = nodes
    cluster = Cluster(ClusterConfig(train=train_cfg(tmp_path, "types"), clients=4, clients_per_actor=2))
    cluster.start()
    try:
        summary = cluster.run()
        control = [gcs_node(cluster.scheduler), gcs_node(cluster.buffer)]
        assert [gcs_node(s) for s in cluster.shards] == [i["node"] for i in cluster.shard_info]
    finally:
        cluster.stop()
    assert summary.failed_clients == {} and summary.epochs == 2
    assert summary.samples == 4 * 2 * 2 * 32
    where = actor_nodes(cluster)
    assert set(where["shards"]) <= {ids["shard"], ids["both"]}  # nodes declaring `shard`
    assert set(where["hosts"].values()) <= {ids["client1"], ids["client2"], ids["both"]}
    assert control == [ids["head"], ids["head"]]  # the driver's node (zero CPUs there)
    p = summary.placement
    assert p["node_types"] == {"shard": True, "client": True} and p["strategy"] == "default"
    assert p["shards"] == {"0": where["shards"][0]}
    assert {tuple(h["clients"]): h["node"] for h in p["hosts"]} == where["hosts"]
    assert p["host_resources"][0]["client"] == 1 and p["shard_resources"]["shard"] == 1
    steps = pq.read_table(tmp_path / "types" / "steps.parquet").to_pandas()
    assert sorted(steps["client"].unique()) == [0, 1, 2, 3]


def test_colocate_puts_a_shard_beside_its_clients_host(nodes, tmp_path):
    _, _, ids = nodes
    cc = ClusterConfig(train=train_cfg(tmp_path, "colo"), clients=4, shards=2, clients_per_actor=2,
                       placement="colocate")
    summary, cluster = run_cluster(cc)
    assert summary.failed_clients == {} and summary.epochs == 2
    where = actor_nodes(cluster)
    assert where["hosts"].keys() == {(0, 2), (1, 3)}  # each host's clients use one shard (c % 2)
    # Only the node declaring both kinds can hold a shard with its host; the PACK group
    # that got it holds both there, the other one is split across the shard and a client node.
    k = where["shards"].index(ids["both"])
    assert where["hosts"][(k, k + 2)] == ids["both"]
    other = 1 - k
    assert where["shards"][other] == ids["shard"]
    assert where["hosts"][(other, other + 2)] in {ids["client1"], ids["client2"]}
    assert ray.util.placement_group_table() and all(
        g["state"] == "REMOVED" for g in ray.util.placement_group_table().values())  # stop() removed them


def test_spread_spreads_client_processes_over_the_client_nodes(nodes, tmp_path):
    _, _, ids = nodes
    cc = ClusterConfig(train=train_cfg(tmp_path, "spread"), clients=3, clients_per_actor=1, placement="spread")
    # Ray's SPREAD is best effort: while an earlier test's actors still hold a node's CPUs it
    # packs bundles onto the nodes that are free. Wait until every CPU is free again.
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    summary, cluster = run_cluster(cc)
    assert summary.failed_clients == {} and summary.client_actors == 3
    hosts = actor_nodes(cluster)["hosts"]
    assert set(hosts.values()) == {ids["client1"], ids["client2"], ids["both"]}  # one per client node


class RemoveNodeOnFirstSteps(Callback):
    """Takes a node away once its clients have trained a few steps."""

    def __init__(self, ray_cluster, node, clients):
        self.ray_cluster, self.node, self.clients = ray_cluster, node, set(clients)
        self.removed_at = None
        self.seen = 0

    def on_steps(self, rows):
        self.seen += sum(r.client in self.clients for r in rows)
        if self.removed_at is None and self.seen >= 2:
            self.ray_cluster.remove_node(self.node, allow_graceful=False)
            self.removed_at = time.monotonic()


def test_a_client_node_removed_mid_run_drops_only_its_clients(nodes, tmp_path):
    c, named, ids = nodes
    tc = train_cfg(tmp_path, "lost", max_batches=12, budgets=(4,), method="fixed", epochs_per_budget=(2,))
    cluster = Cluster(ClusterConfig(train=tc, clients=4, clients_per_actor=2, placement="spread",
                                    failure_policy="exclude"))  # restart would recover them elsewhere
    cluster.start()
    try:
        where = actor_nodes(cluster)
        victim_ids, victim = next((cl, n) for cl, n in where["hosts"].items() if n in (ids["client1"], ids["client2"]))
        name = next(k for k, v in ids.items() if v == victim)
        cb = RemoveNodeOnFirstSteps(c, named[name], victim_ids)
        cluster.writer.callbacks.append(cb)
        summary = cluster.run()
    finally:
        cluster.stop()
    assert cb.removed_at is not None
    assert sorted(int(k) for k in summary.failed_clients) == sorted(victim_ids)
    steps = pq.read_table(tmp_path / "lost" / "steps.parquet").to_pandas()
    per = steps.groupby("client").size().to_dict()
    survivors = [x for x in range(4) if x not in victim_ids]
    assert all(per[s] == 2 * 12 for s in survivors)  # the others finish every epoch
    assert all(0 < per.get(v, 0) < 2 * 12 for v in victim_ids)  # what the lost clients did is kept
    assert summary.samples == int(steps["samples"].sum())
