"""The headline job as users run it: directly, and through `ray job submit` exactly as the
README's cluster sequence says."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMALL = ["--clients", "3", "--dataset", "digits", "--batch-size", "32", "--max-batches", "4",
         "--test-subset", "64", "--epochs-per-budget", "1", "--no-progress"]


def env(**extra):
    """The user's environment: the venv first on PATH (as after `source .venv/bin/activate`),
    no Ray settings left over from this test process."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    e.update(extra)
    return e


def check_run_dir(out: Path, clients: int) -> dict:
    s = json.loads((out / "summary.json").read_text())
    for k in ("run", "tenant", "method", "dataset", "model", "split_layer", "budgets", "epochs_per_budget", "codec",
              "final_test_accuracy", "bytes_up", "bytes_down", "samples", "wall_seconds",
              "clients", "shards", "mode"):
        assert k in s, k
    assert s["clients"] == clients and not s["failed_clients"]
    steps = pq.read_table(out / "steps.parquet").to_pandas()
    assert {"client", "epoch", "budget", "bytes_up", "bytes_down", "latency"} <= set(steps.columns)
    assert s["bytes_up"] == steps["bytes_up"].sum()
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    assert epochs["budget"].tolist() == [4, 128]
    assert (out / "accuracy.png").exists() and (out / "bytes.png").exists() and (out / "config.json").exists()
    assert (out / "report.html").exists()  # every job gets the run report
    return s


def test_job_starts_its_own_ray(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "jobs/deprune.py", *SMALL, "--out", str(out)],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final test accuracy" in r.stdout
    assert "digits images are 8 px, too small for vgg_small; using 16 px" in r.stderr  # no --image-size needed
    check_run_dir(out, 3)


def test_job_with_32_one_per_actor_clients(tmp_path):
    """The headline size with one actor process per client (auto would group them on a
    small machine): all 32 train and evaluate."""
    out = tmp_path / "run32"
    args = [*SMALL, "--clients", "32", "--clients-per-actor", "1", "--max-batches", "1", "--test-subset", "32"]
    r = subprocess.run([sys.executable, "jobs/deprune.py", *args, "--out", str(out)],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = check_run_dir(out, 32)
    assert s["client_actors"] == 32 and s["clients_per_actor"] == 1
    assert "32 in 32 actor processes" in r.stdout
    steps = pq.read_table(out / "steps.parquet").to_pandas()
    assert sorted(steps["client"].unique()) == list(range(32))


def test_job_rejects_bad_options_clearly(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "jobs/deprune.py", *args], cwd=ROOT, env=env(),
                              capture_output=True, text=True, timeout=120)

    r = run("--clients", "0")
    assert r.returncode == 2 and "clients must be >= 1, got 0" in r.stderr
    r = run("--mode", "ring")
    assert r.returncode == 2 and "--mode: 'ring' is not one of: independent, splitfed" in r.stderr
    r = run("--clients-per-actor", "x")
    assert r.returncode == 2 and "--clients-per-actor: 'x'" in r.stderr


README_SEQUENCE = re.compile(r"<!-- cluster-sequence -->\s*```(?:bash|sh)?\n(.*?)```", re.S)


def readme_sequence() -> list[str]:
    m = README_SEQUENCE.search((ROOT / "README.md").read_text())
    assert m, "README.md lost its cluster sequence block (<!-- cluster-sequence --> then a bash block)"
    return [ln.split("  #")[0].rstrip() for ln in m.group(1).splitlines() if ln.strip()]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_readme_cluster_sequence_runs_as_written_with_authentication_on(tmp_path):
    """Every line of the README's `ray start --head` / `ray job submit` block, run as written
    in one shell from the repository root, in a home without a Ray token yet. Between the
    submit and `ray stop`, the dashboard must refuse a request without the token: the
    sequence works with token authentication on, not by turning it off."""
    lines = readme_sequence()
    assert any(ln.startswith("ray start --head") for ln in lines)
    assert any(ln.startswith("ray job submit") and "jobs/deprune.py --clients 32" in ln for ln in lines)
    assert lines[-1] == "ray stop"
    for port in (6379, 8265):
        assert port_free(port), f"port {port} is taken: another Ray runs here; stop it before this test"
    probe = ("code=$(python -c \"import urllib.request as u, urllib.error as e\n"
             "try: u.urlopen('http://127.0.0.1:8265/api/jobs/'); print(200)\n"
             "except e.HTTPError as x: print(x.code)\"); echo \"unauthenticated request: $code\"")
    script = "\n".join(["set -e", *lines[:-1], probe, lines[-1]])
    home = tmp_path / "home"
    home.mkdir()
    out = ROOT / "runs" / "deprune"
    started = time.time()
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env(HOME=str(home)), capture_output=True, text=True,
                       timeout=1500)
    try:
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert "succeeded" in r.stdout + r.stderr
        assert "unauthenticated request: 401" in r.stdout
        assert (home / ".ray" / "auth_token").exists()
        s = json.loads((out / "summary.json").read_text())
        assert s["clients"] == 32 and not s["failed_clients"] and (out / "summary.json").stat().st_mtime > started
    finally:
        if r.returncode != 0:
            subprocess.run(["ray", "stop", "--force"], cwd=ROOT, env=env(HOME=str(home)), capture_output=True)
