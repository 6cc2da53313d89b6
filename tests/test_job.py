"""The headline job as users run it: directly, and through `ray job submit`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMALL = ["--clients", "3", "--dataset", "digits", "--image-size", "16", "--batch-size", "32",
         "--max-batches", "4", "--test-subset", "64", "--epochs-per-budget", "1", "--no-progress"]


def env():
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    e["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster; no token files needed
    return e


def check_run_dir(out: Path, clients: int) -> dict:
    s = json.loads((out / "summary.json").read_text())
    for k in ("method", "dataset", "model", "split_layer", "budgets", "epochs_per_budget", "codec",
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
    return s


def test_job_starts_its_own_ray(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "jobs/deprune.py", *SMALL, "--out", str(out)],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final test accuracy" in r.stdout
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
    r = subprocess.run([sys.executable, "jobs/deprune.py", "--clients", "0"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "clients must be >= 1, got 0" in r.stderr
    r = subprocess.run([sys.executable, "jobs/deprune.py", "--mode", "ring"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'ring'" in r.stderr
    r = subprocess.run([sys.executable, "jobs/deprune.py", "--clients-per-actor", "x"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'x': expected auto or an integer >= 1" in r.stderr


def test_ray_job_submit_against_ray_start_head(tmp_path):
    out = tmp_path / "submitted"
    e = env()
    ray = str(BIN / "ray")
    port = "6391"
    # Our own temp dir (short: it holds unix sockets) marks this cluster's processes, so
    # the test stops only them and not another Ray running on the machine.
    temp = tempfile.mkdtemp(prefix="rsjob", dir="/tmp")
    start = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--dashboard-port=8266",
                            f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats",
                            f"--temp-dir={temp}"],
                           cwd=ROOT, env=e, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        for _ in range(30):  # the job agent comes up a few seconds after `ray start`
            sub = subprocess.run([ray, "job", "submit", "--address", "http://127.0.0.1:8266", "--",
                                  "python", "jobs/deprune.py", *SMALL, "--out", str(out)],
                                 cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
            if "No available agent" not in sub.stdout + sub.stderr:
                break
            time.sleep(2)
        assert sub.returncode == 0, (sub.stdout + sub.stderr)[-3000:]
        assert "succeeded" in sub.stdout + sub.stderr
        check_run_dir(out, 3)
    finally:
        stop_cluster(temp)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_cluster(temp: str) -> None:
    def pids() -> list[int]:
        out = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        while pids() and time.time() < deadline:
            time.sleep(0.5)
    shutil.rmtree(temp, ignore_errors=True)
