"""jobs/energy_split.py as users run it, on tiny data: training, Table III, the cluster run
with a cut per message, reusing the models with another policy and codec, and a bad option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--train-subset", "256", "--test-subset", "40", "--epochs", "1", "--sparse-epochs", "1", "--draws", "20",
        "--bandwidths", "15e3,5e6", "--no-progress"]


def job(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_")}
    return subprocess.run([sys.executable, "jobs/energy_split.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_energy_split_job_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = job(*TINY, "--clients", "2", "--infer-batch", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| **W = 15 kHz** |" in r.stdout and "cuts sent" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["clients"] == 2 and not s["failed_clients"] and s["samples"] == 40
    assert s["messages"] == 14  # 20 samples per client in messages of 3: 7 each
    rows = pq.read_table(out / "inferences.parquet").to_pandas()
    assert len(rows) == 14 and sorted(rows["client"].unique()) == [0, 1]
    assert s["bytes_up"] == rows["bytes_up"].sum()
    # the cluster ran the compressed model exactly (float32 wire): its accuracy is the local one
    assert s["cluster_accuracy"] == pytest.approx(s["compressed_accuracy"])
    # PS sent the cheapest layer: never more than pool-1 or softmax on the same channel draw
    e = rows["energy_j"].to_numpy()
    assert np.all(e <= rows["pool1_processing_j"] + rows["pool1_transmit_j"] + 1e-15)
    assert np.all(e <= rows["softmax_processing_j"] + rows["softmax_transmit_j"] + 1e-15)
    np.testing.assert_allclose(e, rows["processing_j"] + rows["transmit_j"])
    assert (rows["cut"] >= 1).all() and (rows["bits"] <= 8 * rows["bytes_up"]).all()
    assert s["energy_j"] == pytest.approx(rows["energy_j"].sum() / 40)
    sim = json.loads((out / "simulated.json").read_text())
    assert {(x["bandwidth"], x["method"]) for x in sim} >= {(15e3, "PS"), (5e6, "PSNC"), (5e6, "pool-1")}
    for f in ("config.json", "table.md", "profile.md", "cuts.png", "report.html", "models/original.pt",
              "models/compressed.pt"):
        assert (out / f).exists(), f

    # The same models, no training: every client sends the class scores, int8 on the wire, whole messages counted.
    again = tmp_path / "again"
    r = job(*TINY, "--clients", "1", "--models-from", str(out), "--policy", "softmax", "--codec", "int8",
            "--bits", "message", "--out", str(again))
    assert r.returncode == 0, r.stderr[-3000:]
    s2 = json.loads((again / "summary.json").read_text())
    rows = pq.read_table(again / "inferences.parquet").to_pandas()
    assert s2["train_seconds"] == 0.0 and s2["compressed_accuracy"] == pytest.approx(s["compressed_accuracy"])
    assert set(rows["layer"]) == {"fc5"} and (rows["bits"] == 8 * rows["bytes_up"]).all()


def test_energy_split_benchmark_quick(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/energy_split.py", "--quick", "--train-subset", "256",
                        "--draws", "10", "--thresholds",
                        "0.02,0.05", "--codecs", "float32,int8", "--out-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads((tmp_path / "energy_split.json").read_text())
    assert [x["threshold"] for x in res["sweep"]] == [0.02, 0.05]
    assert res["sweep"][1]["compression_ratio"] > res["sweep"][0]["compression_ratio"] > 1
    assert {(x["bandwidth"], x["method"]) for x in res["table_iii"]} == {
        (w, m) for w in (15e3, 5e6, 15e6) for m in ("pool-1", "softmax", "PS", "PSNC", "input")}
    assert [c["codec"] for c in res["codecs"]] == ["float32", "int8"] and len(res["layers"]["original"]) == 13
    assert "## Table III" in (tmp_path / "energy_split.md").read_text()
