import pytest

from raysplit.config import ClusterConfig, TrainConfig
from raysplit.runtime.placement import actor_env, client_num_cpus, hosting, malloc_mode


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(clients=0), "clients must be >= 1, got 0"),
        (dict(clients=2, shards=3), "shards must be in 1..clients"),
        (dict(client_cpu=0.0), "cpu cap 0.0 invalid"),
        (dict(mode="ring"), "unknown mode 'ring'"),
        (dict(policy="random"), "unknown policy 'random'; choose one of sync, async"),
        (dict(shard_sync="gossip"), "unknown shard_sync 'gossip'"),
        (dict(partition="zipf"), "unknown partition 'zipf'"),
        (dict(malloc="huge"), "unknown malloc 'huge'"),
        (dict(policy="async", mode="splitfed"), "needs policy 'sync'"),
        (dict(policy="async", sync_every=2), "sync_every syncs replicas at common step counts: it needs policy 'sync'"),
        (dict(fail_client=(1, -1)), None),
        (dict(sync_every=-1), "sync_every must be >= 0"),
        (dict(clients_per_actor=0), "clients_per_actor must be 'auto' or an integer >= 1, got 0"),
        (dict(clients_per_actor="many"), "got 'many'"),
        (dict(clients_per_actor=True), "got True"),
        (dict(openmp_spin=-1), "openmp_spin must be None or an integer >= 0, got -1"),
        (dict(failure_policy="retry"), "unknown failure_policy 'retry'; choose one of restart, exclude, raise"),
        (dict(max_failures=-1), "max_failures must be an integer >= 0, got -1"),
        (dict(max_failures=True), "max_failures must be an integer >= 0, got True"),
        (dict(mode="ushaped", policy="async"), None),
    ],
)
def test_cluster_config_names_the_bad_value(kw, msg):
    if msg is None:
        ClusterConfig(**kw)  # accepted
        return
    with pytest.raises(ValueError, match=msg):
        ClusterConfig(**kw)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(tenant="a b"), "tenant 'a b' invalid"),
        (dict(run_id="-x"), "run_id '-x' invalid"),
        (dict(evaluate="some"), "unknown evaluate 'some'; choose one of share, full"),
        (dict(dataset="imagenet1k"), "unknown data set 'imagenet1k'"),
        (dict(method="deprune", budgets=(128, 4)), "budgets must be ascending"),
        (dict(budgets=(4, 8, 16), epochs_per_budget=(1, 2)), "must have one entry per budget"),
        (dict(train_subset=0), "train_subset must be >= 1"),
        (dict(checkpoint_every=-1), "checkpoint_every must be >= 0"),
        (dict(on_nonfinite="ignore"), "unknown on_nonfinite 'ignore'; choose one of skip, stop"),
    ],
)
def test_train_config_names_the_bad_value(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


def test_train_config_defaults_and_method_sets_the_module():
    t = TrainConfig()
    assert t.out == "runs/deprune" and t.batch_size == 32 and t.train_subset == 8192 and t.split.use_module
    assert not TrainConfig(method="none").split.use_module


def test_malloc_mode():
    assert malloc_mode("auto") == "fast"
    assert malloc_mode("lean") == "lean"


def test_hosting_auto_keeps_client_processes_within_four_per_cpu():
    assert hosting("auto", 8, 2) == 1  # 8 processes on 2 CPUs: one client each
    assert hosting("auto", 9, 2) == 2
    assert hosting("auto", 32, 2) == 4  # the headline job here: 8 processes of 4
    assert hosting("auto", 32, 8) == 1  # a bigger node: one process per client
    assert hosting("auto", 3, 0) == 1  # a CPU-less head counts as one CPU
    assert hosting(1, 32, 2) == 1 and hosting(8, 32, 2) == 8


def test_client_scheduling_share_fits_the_machine():
    share = client_num_cpus(0.4, 32, 2.0, 1.0, 1)
    assert 0 < share * 32 <= 0.9 * (2.0 - 1.0)  # the shard keeps its CPU
    assert client_num_cpus(0.4, 2, 64.0, 1.0, 1) == 0.4  # plenty of room: the cap itself


def test_actor_env_sets_malloc_and_openmp_spin():
    env = actor_env("lean", 100_000)["env_vars"]
    assert env == {"MALLOC_MMAP_THRESHOLD_": "65536", "GOMP_SPINCOUNT": "100000"}
    assert "GOMP_SPINCOUNT" not in actor_env("fast", None)["env_vars"]


def _job():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("deprune_job", Path(__file__).parent.parent / "jobs" / "deprune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


def test_job_options_come_from_the_config_dataclasses(tmp_path, capsys):
    job = _job()
    p = job.parser()
    cc = job.config_from_argv(p, ["--clients", "32"])
    assert cc == ClusterConfig(clients=32, train=TrainConfig())  # one set of defaults
    cc = job.config_from_argv(job.parser(), ["--clients-per-actor", "4", "--openmp-spin", "none",
                                             "--inject-fault", "3:1", "--no-reset-filter", "--threads", "2"])
    assert cc.clients_per_actor == 4 and cc.openmp_spin is None and cc.fail_client == (3, 1)
    assert not cc.train.reset_filter and cc.train.split.torch_threads == 2
    y = tmp_path / "run.yaml"
    y.write_text("clients: 5\nbudgets: [8]\nepochs_per_budget: 1\nmethod: fixed\ncodec: int8+zstd\n")
    cc = job.config_from_argv(job.parser(), ["--config", str(y), "--clients", "6"])
    assert cc.clients == 6 and cc.train.budgets == (8,) and cc.train.split.codec == "int8+zstd"
    with pytest.raises(SystemExit):
        job.config_from_argv(job.parser(), ["--openmp-spin", "-3"])
    help_text = job.parser().parser.format_help()
    for flag in ("--clients", "--budgets", "--codec", "--policy", "--tenant", "--evaluate", "--address",
                 "--failure-policy", "--max-failures", "--on-nonfinite", "--resume", "--tenant-key-file", "--u-cut"):
        assert flag in help_text
    for argv, message in ((["--failure-policy", "x"], "--failure-policy: 'x' is not one of: restart, exclude, raise"),
                          (["--max-failures", "-2"], "max_failures must be an integer >= 0, got -2"),
                          (["--on-nonfinite", "nan"], "--on-nonfinite: 'nan' is not one of: skip, stop"),
                          (["--u-cut", "2"], "u_cut 2 must come after split_layer 4"),
                          (["--u-cut", "8"], "u_cut 8 is the second cut of U-shaped training: it needs --mode "),
                          (["--resume", str(tmp_path / "nothing")], "no config.json there"),
                          (["--tenant-key-file", "x", "--max-failures", "z"], "--max-failures: 'z' is not an integer")):
        with pytest.raises(SystemExit):
            job.config_from_argv(job.parser(), argv)
        assert message in capsys.readouterr().err, argv


def test_local_and_cluster_jobs_share_the_training_options():
    from raysplit import local

    job = _job()
    local_flags = set(local.parser().options)
    job_flags = set(job.parser().options)
    assert local_flags and local_flags <= job_flags
