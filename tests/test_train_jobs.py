"""jobs/bottlefit.py as users run it: on a local Ray cluster of several clients and shards
(slow: it starts Ray and its actors). jobs/prune.py runs in tests/test_train_benchmarks.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "2",
         "--test-subset", "96", "--no-progress", "--threads", "1"]


def run_job(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, f"jobs/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def test_bottlefit_job_trains_teacher_then_student_and_scores_bq(tmp_path):
    out = tmp_path / "bf"
    r = run_job("bottlefit.py", *SMALL, "--clients", "2", "--shards", "2", "--clients-per-actor", "2", "--bottleneck", "3",
                "--epochs-per-budget", "1,1", "--teacher-epochs", "1", "--out", str(out))
    teacher = json.loads((out / "teacher" / "summary.json").read_text())
    assert teacher["method"] == "none" and teacher["models"] == ["models/budget_128.pt"]
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "bottlefit" and s["budgets"] == [3, 3] and s["clients"] == 2 and s["shards"] == 2
    assert json.loads((out / "config.json").read_text())["train"]["split"]["teacher"].endswith(
        "teacher/models/budget_128.pt")
    steps = pq.read_table(out / "steps.parquet").to_pandas()
    # the distillation stages carry the teacher's activation (128 x 4 x 4 floats a sample) up, not down
    assert (steps.bytes_up > 128 * 16 * 4 * steps.samples).all() and (steps.bytes_down < 3 * 16 * 5 * steps.samples).all()
    bq = json.loads((out / "bq.json").read_text())
    f32, q = bq["rows"]
    assert (f32["codec"], q["codec"]) == ("float32", "uint8") and f32["total"] == q["total"] == 96
    assert f32["accuracy"] == pytest.approx(s["final_test_accuracy"])  # the run's own evaluation, re-scored
    assert q["bytes_per_sample"] < 0.3 * f32["bytes_per_sample"]
    assert "fewer bytes" in r.stdout
