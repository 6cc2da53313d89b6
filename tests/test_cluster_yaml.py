"""cluster.yaml checked offline with Ray's own cluster-launcher code.

What is checked, exactly (Ray 2.60, private API ``ray.autoscaler._private.util``):

* ``validate_config(raw)``: the YAML as written validates against Ray's
  ``ray-schema.json`` (no unknown keys, integer resources, ...) plus Ray's extra
  checks (``head_node_type`` is a node type, sum of ``min_workers`` <= ``max_workers``).
* ``prepare_config(raw)`` then ``validate_config``: what ``ray up`` builds before it
  talks to the cloud. For AWS, ``prepare_config`` only merges
  ``ray/autoscaler/aws/defaults.yaml`` (a local file), merges ``setup_commands``
  into head/worker setup commands and fills per-type min/max workers. It needs no
  boto3, credentials or network; the tests block sockets to prove it.
  (``ray up`` afterwards calls the provider's ``fillout_available_node_types_resources``
  and ``bootstrap_config``, which do use boto3 and AWS; those are not exercised here.)
* The node types and resources raysplit's scheduling relies on.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cluster.yaml checks must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def raw() -> dict:
    with open(CLUSTER_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture
def prepared(raw, no_network) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def test_raw_yaml_passes_rays_schema(raw, no_network):
    from ray.autoscaler._private.util import validate_config

    validate_config(copy.deepcopy(raw))


def test_prepared_config_passes_and_keeps_our_values(raw, prepared):
    assert prepared["provider"]["type"] == "aws"
    # Ray's defaults.yaml must not have replaced anything we wrote.
    for key, value in raw.items():
        if key in ("head_setup_commands", "worker_setup_commands"):
            continue  # prepare_config prepends setup_commands to these
        assert prepared[key] == value, key
    assert prepared["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]
    assert prepared["worker_setup_commands"] == raw["setup_commands"] + raw["worker_setup_commands"]
    # ... in particular not Ray's default setup (a nightly wheel) or its default node types.
    all_cmds = " ".join(prepared["head_setup_commands"] + prepared["worker_setup_commands"])
    assert "ray-wheels" not in all_cmds
    assert set(prepared["available_node_types"]) == {"head", "gpu_shard", "cpu_client"}


def test_node_types_and_resources(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "no work on the head"
    assert head["max_workers"] == 0

    gpu = types["gpu_shard"]
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["resources"]["shard"] == 1
    assert "client" not in gpu["resources"]
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4", "p5"))

    cpu = types["cpu_client"]
    assert cpu["resources"]["client"] >= 1
    assert cpu["resources"].get("GPU", 0) == 0
    assert "shard" not in cpu["resources"]
    assert cpu["resources"]["CPU"] >= cpu["resources"]["client"]  # one core per client

    for name, t in types.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        assert all(isinstance(v, int) for v in t["resources"].values()), name
    assert sum(t["max_workers"] for t in types.values()) <= prepared["max_workers"]
    # The documented example (--clients 32 --shards 2) fits.
    assert cpu["max_workers"] * cpu["resources"]["client"] >= 32
    assert gpu["max_workers"] * gpu["resources"]["shard"] >= 2


def test_code_is_mounted_and_installed(raw):
    mounts = raw["file_mounts"]
    assert "~/raysplit" in mounts
    local = (ROOT / mounts["~/raysplit"]).resolve()
    assert local == ROOT, "run `ray up` from the repository root"
    assert (local / "pyproject.toml").exists()
    cmds = raw["setup_commands"]
    assert any(re.search(r"pip install -e ~/raysplit\b", c) for c in cmds)
    assert not any("git+" in c for c in cmds)
    assert ".venv" in raw["rsync_exclude"] and ".git" in raw["rsync_exclude"]


def test_ray_version_pinned_within_project_range(raw):
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pins = [m for c in raw["setup_commands"] for m in re.findall(r"ray\[default\]==([\w.]+)", c)]
    assert len(pins) == 1, "pin one Ray version for every node"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_req = next(Requirement(x) for x in deps if Requirement(x).name == "ray")
    assert ray_req.specifier.contains(pins[0]), (pins[0], str(ray_req))


def test_standard_start_commands(raw):
    head = " ".join(raw["head_start_ray_commands"])
    worker = " ".join(raw["worker_start_ray_commands"])
    assert raw["head_start_ray_commands"][0] == "ray stop"
    assert raw["worker_start_ray_commands"][0] == "ray stop"
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    # Resources come from available_node_types (the launcher exports them to
    # `ray start`); a --num-cpus/--resources flag here would fight that.
    assert "--resources" not in head + worker and "--num-cpus" not in head + worker


def test_launch_instructions_in_comments():
    text = CLUSTER_YAML.read_text(encoding="utf-8")
    assert "ray up" in text
    assert re.search(r"ray job submit --address \S+ .*-- python jobs/deprune\.py --clients 32 --shards 2", text)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(max_workers_typo=3),  # unknown top-level key
        lambda c: c["available_node_types"]["head"]["resources"].update(CPU=0.5),  # not an int
        lambda c: c.update(head_node_type="nope"),
        lambda c: c["available_node_types"]["cpu_client"].update(min_workers=99),  # > max_workers
    ],
    ids=["unknown-key", "float-resource", "bad-head-type", "min-over-max"],
)
def test_validator_is_live(raw, no_network, mutate):
    """The schema check really rejects broken configs (so the passes above mean something)."""
    from ray.autoscaler._private.util import validate_config

    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(Exception):
        validate_config(bad)


def documented_job(text: str) -> str:
    """The job command of the comment's `ray job submit ... -- python jobs/deprune.py ...`."""
    m = re.search(r"ray job submit .*? -- (python jobs/deprune\.py[^\n]*)", text)
    assert m, "no documented ray job submit command"
    return m.group(1).strip()


@pytest.mark.parametrize("clients, expect", [(None, {"cpu_client": 4, "gpu_shard": 2}),
                                             (512, {"cpu_client": 8, "gpu_shard": 2})])
def test_node_types_hold_what_the_driver_asks_for(prepared, clients, expect):
    """The driver's actor demands for the documented command (and for 512 clients),
    planned as on a fresh `ray up` cluster (the head alone, plus the node types of the
    head's ~/ray_bootstrap_config.yaml), then packed onto cluster.yaml's node types by
    Ray's own autoscaler: every demand fits, on the node type meant for it."""
    from _jobs import job_config
    from raysplit.runtime.nodes import HEAD_MARK, inventory, launcher_node_types, layout_for, nodes_to_launch

    cc = job_config(documented_job(CLUSTER_YAML.read_text(encoding="utf-8")))
    assert (cc.clients, cc.shards) == (32, 2)
    if clients:
        cc = cc.replace(clients=clients)
    head = {"Resources": {**prepared["available_node_types"]["head"]["resources"], HEAD_MARK: 1.0}}
    layout = layout_for(cc, inventory([head], launcher_node_types(prepared)))
    assert layout.node_types == (True, True) and layout.use_gpu  # shards on the GPU type, with its GPU
    assert layout.shard_resources == {"CPU": 1.0, "GPU": 1, "shard": 1}
    assert all(r["client"] == 1 for r in layout.host_resources)
    to_add, unplaced = nodes_to_launch(layout.demands(), prepared)
    assert unplaced == [] and to_add == expect
    # ... and each kind of node gets only its kind of actor
    gpu, cpu = (prepared["available_node_types"][t]["resources"] for t in ("gpu_shard", "cpu_client"))
    assert all(k in gpu for k in layout.shard_resources) and "client" not in gpu
    assert all(k in cpu for r in layout.host_resources for k in r) and "GPU" not in cpu
