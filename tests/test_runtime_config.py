import pytest

from raysplit.runtime.cluster import Cluster, hosting, malloc_mode
from raysplit.config.cluster import ClusterConfig


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(clients=0), "clients must be >= 1, got 0"),
        (dict(clients=2, shards=3), "shards must be in 1..clients"),
        (dict(client_cpu=0.0), "cpu cap 0.0 invalid"),
        (dict(mode="ring"), "unknown mode 'ring'"),
        (dict(policy="random"), "unknown policy 'random'"),
        (dict(shard_sync="gossip"), "unknown shard_sync 'gossip'"),
        (dict(partition="zipf"), "unknown partition 'zipf'"),
        (dict(malloc="huge"), "unknown malloc 'huge'"),
        (dict(policy="async", mode="splitfed"), "needs policy 'sync'"),
        (dict(sync_every=-1), "sync_every must be >= 0"),
        (dict(clients_per_actor=0), "clients_per_actor must be 'auto' or an integer >= 1, got 0"),
        (dict(clients_per_actor="many"), "got 'many'"),
        (dict(clients_per_actor=True), "got True"),
        (dict(openmp_spin=-1), "openmp_spin must be None or an integer >= 0, got -1"),
    ],
)
def test_cluster_config_names_the_bad_value(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ClusterConfig(**kw)


def test_malloc_mode():
    assert malloc_mode("auto", 32, 2) == "lean"
    assert malloc_mode("auto", 1, 2) == "fast"
    assert malloc_mode("auto", 8, 2) == "fast"
    assert malloc_mode("fast", 64, 2) == "fast"


def test_hosting_auto_keeps_client_processes_within_four_per_cpu():
    assert hosting("auto", 8, 2) == 1  # 8 processes on 2 CPUs: one client each
    assert hosting("auto", 9, 2) == 2
    assert hosting("auto", 32, 2) == 4  # the headline job here: 8 processes of 4
    assert hosting("auto", 32, 8) == 1  # a bigger node: one process per client
    assert hosting("auto", 3, 0) == 1  # a CPU-less head counts as one CPU
    assert hosting(1, 32, 2) == 1 and hosting(8, 32, 2) == 8


def test_client_scheduling_share_fits_the_machine():
    c = Cluster(ClusterConfig(clients=32, client_cpu=0.4))
    share = c._client_num_cpus({"CPU": 2.0})
    assert 0 < share * 32 <= 0.9 * (2.0 - 1.0)  # the shard keeps its CPU
    c = Cluster(ClusterConfig(clients=2, client_cpu=0.4))
    assert c._client_num_cpus({"CPU": 64.0}) == 0.4  # plenty of room: the cap itself


def test_actor_env_sets_malloc_and_openmp_spin():
    from raysplit.runtime.cluster import actor_env

    env = actor_env("lean", 100_000)["env_vars"]
    assert env == {"MALLOC_MMAP_THRESHOLD_": "65536", "GOMP_SPINCOUNT": "100000"}
    assert "GOMP_SPINCOUNT" not in actor_env("fast", None)["env_vars"]


def test_job_option_parsers():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("deprune_job", Path(__file__).parent.parent / "jobs" / "deprune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    cc = job.config_from_args(job.parser().parse_args(["--clients", "32"]))
    assert cc.clients_per_actor == "auto" and cc.openmp_spin == 30_000
    cc = job.config_from_args(job.parser().parse_args(["--clients-per-actor", "4", "--openmp-spin", "none"]))
    assert cc.clients_per_actor == 4 and cc.openmp_spin is None
    with pytest.raises(SystemExit):
        job.parser().parse_args(["--openmp-spin", "-3"])
