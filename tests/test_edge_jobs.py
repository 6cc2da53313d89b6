"""jobs/testbed.py, jobs/edge.py and the edge benchmarks as users run them (slow: small data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "digits", "--image-size", "16", "--model", "vgg_small", "--test-subset", "64"]


def run(args, timeout=600):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return r


# first: it starts its own Ray (the benchmarks' private one), before the shared one below exists
def test_benchmarks_quick(tmp_path):
    r = run(["benchmarks/time_to_accuracy.py", "--quick", "--links", "wifi", "--out-dir", str(tmp_path)])
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {x["method"]: x for x in json.loads((tmp_path / "time_to_accuracy.json").read_text())["rows"]}
    assert rows["none"]["speedup"] == 1.0 and rows["adaptive"]["wire_bytes"] > 0
    r = run(["benchmarks/tenants.py", "--quick", "--points", "1", "--quiet-wait", "0", "--out-dir", str(tmp_path)])
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads((tmp_path / "tenants.json").read_text())["rows"]
    assert row["ok"] == 1 and row["peak_pss_gib"] > 0


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray that the job runs join with --address (as under `ray job submit`),
    instead of each starting and stopping its own: the machine's CPUs, as a job's own Ray has."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_testbed_job_writes_the_figures_and_the_table(tmp_path, ray_address):
    out = tmp_path / "tb"
    r = run(["jobs/testbed.py", "--address", ray_address, "--settings", "wifi", "--variants", "none,fixed", "--sources", "2", "--batches", "2",
             "--epochs", "1", "--deprune-epochs", "1", *TINY, "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| wifi | fixed |" in r.stdout
    for name in ("traffic", "samples", "throughput"):
        assert (out / f"wifi_{name}.png").stat().st_size > 0
        assert pq.read_table(out / f"wifi_{name}.parquet").num_rows > 0
    table = {row["variant"]: row for row in json.loads((out / "summary.json").read_text())["runs"]}
    assert table["none"]["traffic_reduction"] == 1.0
    assert table["fixed"]["traffic_reduction"] > 20  # B = 4 of 128 channels
    assert table["fixed"]["bytes_up_per_sample"] < table["none"]["bytes_up_per_sample"] / 20
    samples = pq.read_table(out / "wifi_samples.parquet").to_pandas()
    assert set(samples["source"]) == {0, 1} and samples.groupby(["variant", "source"])["cumulative_samples"].max().eq(32).all()


def test_edge_job_runs_tenants_side_by_side_and_survives_a_failing_one(tmp_path, ray_address):
    spec = tmp_path / "tenants.yaml"
    spec.write_text(yaml.safe_dump({
        "defaults": {"dataset": "digits", "max-batches": 2, "test-subset": 32, "epochs-per-budget": 1,
                     "method": "fixed", "budgets": [4]},
        "tenants": [
            {"name": "lab-a", "clients": 2, "link": "wifi"},
            {"name": "lab-b", "clients": 2, "devices": [{"name": "phone", "fraction": 0.5, "cpu": 0.4, "link": "lte"},
                                                        {"name": "sensor", "fraction": 0.5, "link": "3g"}]},
            {"name": "broken", "clients": 1, "dataset": "fashion-mnist", "data-dir": str(tmp_path / "nothing")},
        ],
    }))
    out = tmp_path / "edge"
    r = run(["jobs/edge.py", "--address", ray_address, "--tenants", str(spec), "--out", str(out)], timeout=900)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]  # one tenant failed, the others finished
    results = {t["name"]: t for t in json.loads((out / "tenants.json").read_text())}
    assert results["lab-a"]["returncode"] == 0 and results["lab-b"]["returncode"] == 0
    assert results["broken"]["returncode"] == 2 and "fashion-mnist" in results["broken"]["error"].lower()
    for name in ("lab-a", "lab-b"):
        s = json.loads((out / name / "summary.json").read_text())
        assert s["tenant"] == name and s["sim_seconds"] > 0 and not s["failed_clients"]
        assert pq.read_table(out / name / "steps.parquet").to_pandas()["tenant"].eq(name).all()
        assert f"namespace raysplit-{name}" in (out / name / "tenant.log").read_text()
    b = json.loads((out / "lab-b" / "summary.json").read_text())
    assert any("lte" in ln for ln in b["links"]) and any("3g" in ln for ln in b["links"])
    # a bad tenant option is reported before anything starts, naming the tenant
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tenants": [{"name": "x", "link": "wfi"}]}))
    r = run(["jobs/edge.py", "--address", ray_address, "--tenants", str(bad), "--out", str(tmp_path / "bad")])
    assert r.returncode == 2 and "tenant x" in r.stderr and "wfi" in r.stderr
