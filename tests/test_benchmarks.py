"""The benchmark scripts run end to end (smoke size) and write what they claim to.

Their figures are measured on a quiet machine and reported in the README; these tests
only check that every script still runs and records its columns (no timing asserts).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def run_bench(script: str, tmp_path: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--out-dir", str(tmp_path), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / f"{script}.md").exists()
    return json.loads((tmp_path / f"{script}.json").read_text())


def test_parse_variant():
    from pipeline_efficiency import parse_variant

    assert parse_variant("fast") == ("fast", None)
    assert parse_variant("auto:spin30000") == ("auto", 30000)
    with pytest.raises(ValueError, match="variant 'mallopt'; allowed: auto|fast|lean"):
        parse_variant("mallopt")


def test_process_role_names_actors_workers_and_programs():
    """The benchmarks' CPU-by-role figures: a Ray worker by its actor class, a python
    program by its script (not its flags), inline code as ``python -c``."""
    import _common as C

    class P:
        def __init__(self, *cmd, pid=7):
            self.cmd, self.pid = list(cmd), pid

        def cmdline(self):
            return self.cmd

        def name(self):
            return "proc"

    assert C.process_role(P("ray::ClientHost.run"), 1) == "ClientHost"
    assert C.process_role(P("ray::IDLE"), 1) == "IDLE"
    assert C.process_role(P("/usr/bin/python3", "-u", "/x/default_worker.py", "--node-ip-address=1"), 1) == "worker"
    assert C.process_role(P("/venv/bin/python", "-u", "/x/ray/dashboard/agent.py", "--x"), 1) == "agent.py"
    assert C.process_role(P("/venv/bin/python", "-c", "import sys; sys.path = ['a', 'b']"), 1) == "python -c"
    assert C.process_role(P("/opt/ray/core/src/ray/raylet/raylet", "--x"), 1) == "raylet"
    assert C.process_role(P("python", pid=1), 1) == "driver"


def test_materialise_measures_park_and_load(tmp_path):
    r = run_bench("materialise", tmp_path, "--calls", "2", "--repeats", "1")
    assert [x["call"] for x in r["rows"]] == ["park", "load"]
    assert all(x["cpu_ms"] > 0 and x["wall_ms"] > 0 for x in r["rows"])
    assert r["state"]["momentum_buffers"] > 0 and r["state"]["parked_kib"] > 0  # it trained a step first


@pytest.mark.slow
def test_pipeline_efficiency_quick(tmp_path):
    res = run_bench("pipeline_efficiency", tmp_path, "--quick", "--quiet-wait", "0", "--variants", "auto,fast:spin30000")
    rows = {r["actors"]: r for r in res["rows"]}
    assert set(rows) == {"auto", "fast:spin30000"}
    for r in rows.values():
        assert r["pairs"] == 1 and r["local_sps"] > 0 and r["cluster_sps"] > 0
        assert r["ratio"] == pytest.approx(r["cluster_sps"] / r["local_sps"], rel=1e-6)


@pytest.mark.slow
def test_scaling_quick(tmp_path):
    # two points, not the three --quick runs by default: explicit options override it
    res = run_bench("scaling", tmp_path, "--quick", "--clients", "4", "--quiet-wait", "0")
    rows = [(r["clients"], r["clients_per_actor"], r["actors"]) for r in res["rows"]]
    assert rows == [(4, 1, 4), (4, 2, 2)]
    for r in res["rows"]:
        assert r["failed"] == 0 and r["samples"] > 0 and r["peak_pss_gib"] > r["idle_ray_pss_gib"] > 0


@pytest.mark.slow
def test_bytes_per_sample_quick(tmp_path):
    res = run_bench("bytes_per_sample", tmp_path, "--quick", "--budgets", "4", "--codecs", "float32,int8,float16+lz4")
    rows = {(r["method"], r["codec"]): r for r in res["rows"]}
    assert set(rows) == {("none", "float32"), ("fixed", "float32"), ("fixed", "int8"), ("fixed", "float16+lz4")}
    for r in rows.values():
        assert r["batch"] == 16 and r["steps"] == 4 and r["samples"] == 64
        assert r["up_B_per_sample"] > 0 and r["down_B_per_sample"] > 0
    assert rows["none", "float32"]["budget"] == 128 and rows["fixed", "int8"]["budget"] == 4
    for key in (("none", "float32"), ("fixed", "float32"), ("fixed", "int8")):  # uncompressed: exact sizes
        assert rows[key]["up_exact"] and rows[key]["down_exact"]
    assert "up_exact" not in rows["fixed", "float16+lz4"]
    assert rows["fixed", "int8"]["up_B_per_sample"] < rows["fixed", "float32"]["up_B_per_sample"]
    assert rows["fixed", "float32"]["up_vs_none"] < 0.05 and rows["none", "float32"]["up_vs_none"] == 1.0


@pytest.mark.slow
def test_select_lr_quick(tmp_path):
    res = run_bench("select_lr", tmp_path, "--quick")
    assert [r["gamma"] for r in res["rows"]] == [1.0, 3.0]
    for r in res["rows"]:
        assert r["budget"] == [4, 128] and len(r["test_accuracy"]) == 2
        # selectLr: lr x gamma in the first (l_k = 1) epoch after the transition
        assert r["lr"] == pytest.approx([0.01, 0.01 * r["gamma"]])
        assert r["final_test_accuracy"] == pytest.approx(r["test_accuracy"][-1], abs=1e-4)


@pytest.mark.slow
def test_accuracy_bytes_quick(tmp_path):
    res = run_bench("accuracy_bytes", tmp_path, "--quick", "--train-subset", "128", "--test-subset", "64")
    rows = {r["method"]: r for r in res["results"]}
    assert list(rows) == ["none", "fixed", "deprune"]
    assert res["setup"]["train_subset"] == 128 and res["setup"]["epochs"] == 2
    assert rows["none"]["budgets"] == [128] and rows["fixed"]["budgets"] == [4]
    assert rows["deprune"]["budgets"] == [4, 128] and rows["deprune"]["epochs_per_budget"] == [1, 1]
    for r in rows.values():
        assert r["samples"] == 2 * 128 and len(r["epochs"]) == 2
        assert r["bytes_total"] == r["bytes_up"] + r["bytes_down"] == sum(e["bytes_up"] + e["bytes_down"]
                                                                          for e in r["epochs"])
        assert (tmp_path / r["method"] / "summary.json").exists()
    assert rows["none"]["bytes_vs_none"] == 1.0
    assert rows["fixed"]["bytes_vs_none"] < rows["deprune"]["bytes_vs_none"] < 1.0
    assert rows["fixed"]["final_filter_on"] is not None and rows["none"]["final_filter_on"] is None


@pytest.mark.slow
def test_cpu_cap_quick(tmp_path):
    res = run_bench("cpu_cap", tmp_path, "--quick", "--quiet-wait", "0", "--caps", "0.4", "--testbed-batches", "2")
    mechs = ["cgroup", "throttle"] if res["machine"]["cgroup_writable"] else ["throttle"]
    assert [(r["mechanism_requested"], r["cap"]) for r in res["runs"]] == [("none", None)] + [(m, 0.4) for m in mechs]
    for r in res["runs"]:
        assert r["steps"] == 8 and r["samples"] == 8 * 16
        assert r["mechanism"] == ("none" if r["cap"] is None else r["mechanism_requested"])
        assert r["client_cpu_s"] > 0 and r["client_compute_sps"] > 0 and r["e2e_sps"] > 0
    by = {r["mechanism_requested"]: r for r in res["runs"]}
    assert by["throttle"]["throttle_cpu_s"] > 0 and by["throttle"]["throttle_slept_s"] >= 0
    if "cgroup" in by:  # the cgroup's own counters were read
        assert by["cgroup"]["cg_nr_periods"] > 0 and "throttle_cpu_s" not in by["cgroup"]
    assert "cg_nr_periods" not in by["none"] and "throttle_cpu_s" not in by["none"]
    assert [r["cap"] for r in res["rows"]] == ["none"] + [0.4] * len(mechs)
    (tb,) = res["testbed"]
    assert tb["clients"] == 2 and tb["samples"] == 2 * 2 * 16 and tb["steps"] == 4 and tb["failed"] == 0
    assert tb["mechanism"] == mechs[0] and tb["total_sps"] > 0 and tb["peak_pss_gib"] > 0


@pytest.mark.slow
def test_pipeline_phases_quick(tmp_path):
    res = run_bench("pipeline_phases", tmp_path, "--quick", "--quiet-wait", "0")
    rows = {r["run"]: r for r in res["rows"]}
    assert list(rows) == ["local", "cluster (default)"]
    assert res["setup"]["cluster"]["default"]["clients"] == 1
    for r in rows.values():
        assert r["steps"] == 5  # 10 steps, the first 5 skipped
        for k in ("fwd", "queue", "server", "transport", "bwd", "rest", "between", "step"):
            assert math.isfinite(r[k]), (r["run"], k)
        assert r["fwd"] > 0 and r["server"] > 0 and r["bwd"] > 0
    assert rows["local"]["queue"] == 0.0


def test_pipeline_phases_variants():
    from pipeline_phases import variant_argv

    assert variant_argv("default") == []
    assert variant_argv("openmp-spin=0+malloc=lean") == ["--openmp-spin", "0", "--malloc", "lean"]
    with pytest.raises(ValueError, match="expected default or option=value"):
        variant_argv("pool-threads")


@pytest.mark.slow
def test_process_memory(tmp_path):
    res = run_bench("process_memory", tmp_path)
    stages = dict((s, m) for s, m in res["results"][0]["stages"])
    ours = stages["+ SplitServer, 3 steps"]  # raysplit's client and server, trained
    assert ours["anon_mib"] > 0 and not ours["dynamo"] and not ours["sympy"]
    assert stages["+ torch.optim.SGD (avoided)"]["dynamo"]
    assert stages["+ backward(gradient) (avoided)"]["sympy"]


@pytest.mark.slow
def test_sizing_quick_feeds_the_sizing_model(tmp_path):
    res = run_bench("sizing", tmp_path, "--quick")
    assert {r["budget"] for r in res["rows"]} == {4, 128} and all(r["shard_sps"] > 0 for r in res["rows"])
    mem = res["memory"]
    assert mem["worker"]["uss_mib"] > 100 and mem["state_mib"] > 0 and set(mem["hosted_uss_mib"]) == {"1", "2"}
    sys.path.insert(0, str(ROOT / "tools"))
    import sizing

    m = sizing.load_measured(tmp_path / "sizing.json")
    assert m.client_cpu_s > 0 and m.shard_cpu_sps > 0 and m.idle_mib == pytest.approx(mem["state_mib"])
