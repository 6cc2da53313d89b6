"""benchmarks/serving.py --quick end to end (slow): the recorded results, not just the exit
status. A tiny NAIR model on digits keeps it short; the figures are not checked for speed
(timing belongs to the benchmark), only for being present and consistent: what was served
equals in-process inference of the same messages, and the bytes per request follow from
the budgets the requests carried."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from raysplit import nair
from raysplit.config import SplitConfig
from raysplit.config.nair import NairConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_serving_benchmark_quick_records_consistent_results(tmp_path):
    model = tmp_path / "nair"
    nair.run(NairConfig(dataset="digits", image_size=16, train_subset=64, test_subset=16, original_epochs=1,
                        epochs=1, batch_size=32, slices=4, variants=("nair",), deadlines=(0.2,), progress=False,
                        out=str(model)), SplitConfig(torch_threads=1, use_module=False), log=lambda *_: None)
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "benchmarks/serving.py", "--quick", "--model", str(model), "--dataset", "digits",
                        "--seconds", "0.4", "--load-seconds", "0.4", "--loads", "1.0", "--requests", "16",
                        "--fixed-budgets", "1,4", "--deadlines", "170ms", "--links", "250kbit;10mbit/5ms",
                        "--quiet-wait", "0", "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads((out / "serving.json").read_text())
    assert (out / "serving.md").read_text().startswith("# Serving") and (out / "serving_latency.png").stat().st_size
    setup = res["setup"]
    assert setup["kind"] == "slices" and setup["budgets"] == [1, 2, 3, 4] and setup["images_per_request"] == [1, 4]
    sizes = {int(b): n for b, n in setup["message_bytes_by_budget"].items()}
    assert sizes[1] < sizes[2] < sizes[3] < sizes[4]

    # phase 1: each size measured, ratios are what the rates say
    rows = {(row["send"], row["images_per_request"]): row for row in res["ratio_by_images_per_request"]}
    assert set(rows) == {(s, k) for s in ("per request", "coalesced") for k in (1, 4)} and setup["coalesce"] == 8
    assert res["ratio"] == rows["per request", 1]["ratio"] and res["ratio_coalesced"] == rows["coalesced", 1]["ratio"]
    for p in res["pairs"]:
        assert p["in_process_rps"] > 0 and p["serve_rps"] > 0
        assert p["ratio"] == pytest.approx(p["serve_rps"] / p["in_process_rps"])
        if p["replica_restarted"]:  # Serve restarted a replica meanwhile: its counters began afresh
            assert math.isnan(p["replica_compute_ms_per_request"])
            continue
        assert p["replica_compute_ms_per_request"] > 0 and 0 < p["replica_busy_fraction"] < 1.5
        # a coalesced call carries several requests (16 in flight, up to 8 per call)
        assert p["requests_per_replica_batch"] > (1.5 if p["send"] == "coalesced" else 0.99)
    for send in ("per request", "coalesced"):
        assert rows[send, 1]["bytes_per_request"] == sizes[4] < rows[send, 4]["bytes_per_request"]
    assert all(row["meets_target"] == (row["ratio"] >= 0.8) for row in rows.values())
    assert setup["phase1_batches"]["max"] > 1  # the replicas batched

    # phase 2: every offered load answered, percentiles ordered, for both ways of sending
    assert sorted((s["send"], s["load_fraction"]) for s in res["sweep"]) == [("coalesced", 1.0), ("per request", 1.0)]
    for s in res["sweep"]:
        assert s["answered"] + s["refused"] == s["sent"] > 0 and 0 < s["p50_ms"] <= s["p99_ms"]

    # phase 3: fixed budgets and a deadline, on two links
    modes = {m["mode"]: m for m in res["modes"]}
    assert set(modes) == {"fixed 1", "fixed 4", "deadline 170 ms"}
    for m in modes.values():
        assert m["requests"] == 16 and m["failed"] == 0 and m["requests_per_s"] > 0
        assert m["in_process_agreement"] == 1.0  # what was served is what the same model answers in process
        assert m["accuracy"] == pytest.approx(m["in_process_accuracy"], abs=1e-9)
        counts = {int(b): n for b, n in m["budget_counts"].items()}
        assert sum(counts.values()) == m["requests"]
        want = sum(n * sizes.get(b, 0) for b, n in counts.items()) / m["requests"]  # budget 0: nothing arrived
        assert m["bytes_per_request"] == pytest.approx(want)
        assert set(m["by_link"]) == {"250kbit", "10mbit/5ms"}
        assert not math.isnan(m["latency_p50_s"]) and m["latency_p50_s"] <= m["latency_p99_s"]
    assert modes["fixed 1"]["budget_counts"] == {"1": 16} and modes["fixed 4"]["budget_counts"] == {"4": 16}
    dl = modes["deadline 170 ms"]["by_link"]  # the slow link gets fewer slices in time than the fast one
    assert dl["250kbit"]["mean_budget"] < dl["10mbit/5ms"]["mean_budget"] == 4
    assert dl["250kbit"]["bytes_per_request"] < dl["10mbit/5ms"]["bytes_per_request"] == sizes[4]
