"""deploy/kuberay: the RayJob manifest and the image it runs, checked offline.

No KubeRay CRD schema installs from the package registries reachable here (PyPI, npm,
Debian: none ships ray.io_rayjobs.yaml), so the manifest's structure is checked by a
schema of our own (``RAYJOB``, below): the ray.io/v1 RayJob fields this manifest uses,
with their types and the fields KubeRay v1.x's CRD requires, and no unknown keys at
those levels (a typo is an error, as with ``kubectl apply --validate=strict``). The Ray
side is checked with Ray's own code: the RayCluster spec goes through the KubeRay
autoscaler's config reader (``_derive_autoscaling_config_from_ray_cr``, which validates
the result against Ray's cluster schema), and the driver's demands for the manifest's
entrypoint are packed onto those node groups by Ray's autoscaler bin packing.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from _jobs import ROOT, job_config

MANIFEST = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
DOCKERFILE = ROOT / "deploy" / "kuberay" / "Dockerfile"

# Our structural schema (not KubeRay's): the subset of the ray.io/v1 RayJob used here.
_STR = {"type": "string"}
_INT = {"type": "integer"}
_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"}]}
_DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def _obj(props: dict, required: tuple = (), extra: bool = False) -> dict:
    out = {"type": "object", "properties": props, "required": list(required)}
    if not extra:
        out["additionalProperties"] = False
    return out


_CONTAINER = _obj({
    "name": _DNS_LABEL, "image": _STR, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "workingDir": _STR, "command": {"type": "array", "items": _STR}, "args": {"type": "array", "items": _STR},
    "env": {"type": "array", "items": _obj({"name": _STR, "value": _STR}, ("name",))},
    "ports": {"type": "array", "items": _obj({"containerPort": _INT, "name": _STR, "protocol": _STR},
                                              ("containerPort",))},
    "resources": _obj({"requests": {"type": "object", "additionalProperties": _QUANTITY},
                       "limits": {"type": "object", "additionalProperties": _QUANTITY}}),
    "volumeMounts": {"type": "array", "items": _obj({"name": _STR, "mountPath": _STR, "readOnly": {"type": "boolean"}},
                                                    ("name", "mountPath"))},
}, ("name", "image"))
_POD_TEMPLATE = _obj({
    "metadata": {"type": "object"},
    "spec": _obj({
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "tolerations": {"type": "array", "items": _obj({"key": _STR, "operator": {"enum": ["Exists", "Equal"]},
                                                         "value": _STR, "effect": _STR})},
        "nodeSelector": {"type": "object", "additionalProperties": _STR},
    }, ("containers",)),
}, ("spec",))
_START_PARAMS = {"type": "object", "additionalProperties": _STR}  # KubeRay: map[string]string
RAYJOB = _obj({
    "apiVersion": {"const": "ray.io/v1"},
    "kind": {"const": "RayJob"},
    "metadata": _obj({"name": _DNS_LABEL, "namespace": _DNS_LABEL, "labels": {"type": "object"}}, ("name",)),
    "spec": _obj({
        "entrypoint": _STR,
        "runtimeEnvYAML": _STR,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": {"type": "integer", "minimum": 0},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "rayClusterSpec": _obj({
            "rayVersion": _STR,
            "enableInTreeAutoscaling": {"type": "boolean"},
            "headGroupSpec": _obj({"rayStartParams": _START_PARAMS, "template": _POD_TEMPLATE,
                                   "serviceType": _STR}, ("template",)),
            "workerGroupSpecs": {"type": "array", "minItems": 1, "items": _obj({
                "groupName": _DNS_LABEL, "replicas": _INT, "minReplicas": _INT, "maxReplicas": _INT,
                "rayStartParams": _START_PARAMS, "template": _POD_TEMPLATE, "idleTimeoutSeconds": _INT,
            }, ("groupName", "minReplicas", "maxReplicas", "template"))},
        }, ("headGroupSpec",)),
    }, ("entrypoint", "rayClusterSpec")),
}, ("apiVersion", "kind", "metadata", "spec"))


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def job(docs) -> dict:
    (rayjob,) = [d for d in docs if d.get("kind") == "RayJob"]
    return rayjob


def groups(job) -> dict:
    spec = job["spec"]["rayClusterSpec"]
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def ray_config(job) -> dict:
    """The autoscaling config Ray's KubeRay integration derives from the RayCluster
    spec (what Ray believes the node groups are), validated against Ray's schema."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"metadata": {"name": job["metadata"]["name"], "namespace": "default"}, "spec": job["spec"]["rayClusterSpec"]}
    return _derive_autoscaling_config_from_ray_cr(copy.deepcopy(cr))


def test_manifest_passes_our_rayjob_schema(job):
    jsonschema.validate(job, RAYJOB)
    for g in groups(job).values():
        if "replicas" in g:
            assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]


@pytest.mark.parametrize("mutate", [
    lambda j: j["spec"].update(entrypiont="python jobs/deprune.py"),  # typo'd field
    lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"].update({"num-gpus": 1}),  # not a string
    lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][1].pop("maxReplicas"),  # required by the CRD
    lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].pop("image"),
    lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][1].update(groupName="CPU_client"),  # not a DNS label
    lambda j: j.update(apiVersion="ray.io/v1alpha1"),
], ids=["unknown-field", "non-string-start-param", "missing-maxReplicas", "no-image", "bad-name", "old-api"])
def test_our_schema_is_live(job, mutate):
    bad = copy.deepcopy(job)
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, RAYJOB)


def test_node_groups_as_ray_reads_them(job):
    types = ray_config(job)["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0  # the driver's node runs no actor that needs a CPU
    shard, client = types["gpu-shard"]["resources"], types["cpu-client"]["resources"]
    assert shard["shard"] == 1 and shard["GPU"] == 1 and "client" not in shard
    assert client["client"] == 8 and client.get("GPU", 0) == 0 and "shard" not in client
    assert client["CPU"] >= client["client"]  # a core per client process


def test_the_fixed_cluster_is_what_the_entrypoint_needs(job):
    """The driver's demands for the entrypoint, planned on the cluster as it stands up
    (every pod joined), need exactly the pods the manifest asks for: none left idle,
    none missing."""
    from raysplit.runtime.nodes import HEAD_MARK, inventory, layout_for, nodes_to_launch

    cfg = ray_config(job)
    cc = job_config(job["spec"]["entrypoint"])
    types = cfg["available_node_types"]
    pods = [{"Resources": {**types["headgroup"]["resources"], HEAD_MARK: 1.0}}]
    for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        pods += [{"Resources": dict(types[g["groupName"]]["resources"])} for _ in range(g["replicas"])]
    layout = layout_for(cc, inventory(pods))
    assert layout.node_types == (True, True) and layout.use_gpu
    to_add, unplaced = nodes_to_launch(layout.demands(), cfg)
    assert unplaced == []
    assert to_add == {g["groupName"]: g["replicas"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert "entrypointNumCpus" not in job["spec"] and "entrypointNumGpus" not in job["spec"]  # the driver asks for nothing
    assert groups(job)["head"]["rayStartParams"]["num-cpus"] == "0"


def test_entrypoint_writes_its_run_directory_to_the_volume(job, docs):
    cc = job_config(job["spec"]["entrypoint"])
    head = groups(job)["head"]["template"]["spec"]
    (c,) = head["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    out = Path(c["workingDir"]) / cc.train.out
    assert any(out.is_relative_to(p) for p in mounts.values()), (out, mounts)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in head["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}


def test_image_matches_the_manifest_the_cluster_yaml_and_the_pins(job):
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG RAY_IMAGE=rayproject/ray:([\d.]+)-py(\d)(\d+)", text, re.M)
    assert base, "the Dockerfile starts from a rayproject/ray image"
    ray_version, py = base.group(1), f"{base.group(2)}.{base.group(3)}"
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_version
    cluster_yaml = (ROOT / "cluster.yaml").read_text(encoding="utf-8")
    assert f'ray[default]=={ray_version}"' in cluster_yaml  # one Ray version on every cloud
    assert py == "3.11"  # the Python the project is tested with
    make = (ROOT / "Makefile").read_text()
    x86 = re.search(r"^else\nTORCH_PINS := (torch==\S+ torchvision==\S+)$", make, re.M).group(1)  # not aarch64's
    assert f"pip install --no-cache-dir {x86}" in text
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    images = set()
    for g in groups(job).values():
        for c in g["template"]["spec"]["containers"]:
            images.add(c["image"])
            assert c["workingDir"] == workdir
    assert len(images) == 1  # one image for every node
    assert re.search(r"-t (\S+) \.", text).group(1) == images.pop()  # the tag the build comment makes
    entry = shlex.split(job["spec"]["entrypoint"])
    assert entry[1] == "jobs/deprune.py" and "COPY --chown=ray:users jobs ./jobs" in text
