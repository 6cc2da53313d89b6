"""The training-method benchmarks: their analysis on known curves, and the scripts end to
end at smoke size (slow), prune and the full-scale preset on a local Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def run_bench(script: str, tmp_path: Path, *args: str) -> dict:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--out-dir", str(tmp_path), "--runs-dir",
                        str(tmp_path / "runs"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert (tmp_path / f"{script}.md").exists()
    return json.loads((tmp_path / f"{script}.json").read_text())


def test_prune_vs_scratch_counts_epochs_to_95_percent_of_the_scratch_final():
    from prune_vs_scratch import analyse

    prune = [0.5, 0.7, 0.8, 0.9, 0.78, 0.86, 0.5, 0.85]  # 128 x 4, then 32 x 2, then 4 x 2
    plan = [(128, 0, 4), (32, 4, 2), (4, 6, 2)]
    scratch = {128: prune[:4], 32: [0.3, 0.5, 0.7, 0.8, 0.82, 0.8], 4: [0.2, 0.4, 0.6, 0.7, 0.75, 0.8]}
    rows = {r["budget"]: r for r in analyse(prune, plan, scratch, 0.95, 1)}
    assert rows[128]["scratch_to_target"] == 4 and rows[128].get("speedup") is None
    assert rows[32]["threshold"] == pytest.approx(0.76)  # 95 % of the last scratch evaluation, 0.8
    assert (rows[32]["scratch_to_target"], rows[32]["prune_to_target"], rows[32]["speedup"]) == (4, 1, 4.0)
    assert (rows[4]["scratch_to_target"], rows[4]["prune_to_target"], rows[4]["speedup"]) == (6, 2, 3.0)
    assert rows[4]["prune_final"] == 0.85
    smooth = {r["budget"]: r for r in analyse(prune, plan, scratch, 0.95, 2)}
    assert smooth[32]["scratch_final"] == pytest.approx(0.81)  # the mean of the last two


def test_regime_is_where_a_fixed_budget_loses_enough():
    from compression_regime import regime

    rows = [{"method": "none", "final_acc": 0.90}, {"method": "fixed", "final_acc": 0.885, "budget": 4},
            {"method": "fixed", "final_acc": 0.88, "budget": 2}, {"method": "fixed", "final_acc": 0.70, "budget": 1}]
    assert [r["budget"] for r in regime(rows, 0.90, 2.0)] == [2, 1]


def test_runner_joins_the_ray_it_is_told_to(monkeypatch):
    """A private Ray by default (this shared machine), a running cluster with --address auto
    (the full-scale run on a user's GPU nodes)."""
    import argparse

    import _common as C
    import _runs as R

    seen = []
    monkeypatch.setattr(C, "ray_init_quiet", lambda **kw: seen.append(kw) or 0.0)
    ap = argparse.ArgumentParser()
    R.add_run_options(ap, "x")
    for argv, want in (([], "local"), (["--address", "auto"], "auto")):
        a = R.parse(ap, argv, {})
        R.Runner([], local=False, out_dir=Path("/tmp"), address=a.address)
        assert seen.pop() == {"address": want}


@pytest.mark.slow
def test_prune_vs_scratch_on_the_cluster_and_its_model_files(tmp_path):
    from raysplit.data import load_dataset
    from raysplit.inference import load_model

    res = run_bench("prune_vs_scratch", tmp_path, "--quick", "--clients", "2", "--shards", "2")
    assert [r["budget"] for r in res["rows"]] == [128, 8]
    assert [r["name"] for r in res["runs"]] == ["prune", "scratch_8"]
    prune = res["runs"][0]
    assert prune["summary"]["method"] == "prune" and prune["summary"]["shards"] == 2
    assert prune["command"].startswith("python jobs/prune.py ")
    assert (tmp_path / "prune_vs_scratch.png").stat().st_size > 1000
    test = load_dataset("digits", "test", limit=64, image_size=16, seed=0)
    for budget, acc in ((128, prune["accuracy"][1]), (8, prune["accuracy"][2])):  # each phase's last epoch
        path = tmp_path / "runs" / "prune" / "models" / f"budget_{budget}.pt"
        shares = [load_model(path, client=c) for c in (0, 1)]
        assert {(m.method, m.budget, m.clients) for m in shares} == {("prune", budget, (0, 1))}
        correct = sum(m.accuracy(test.subset(list(range(32 * c, 32 * c + 32))), 16) * 32 for c, m in enumerate(shares))
        assert correct / 64 == pytest.approx(acc)  # the model file scores what the run measured


@pytest.mark.slow
def test_compression_regime_full_scale_preset_runs_on_cpu(tmp_path):
    """The paper's scale (VGG11, CIFAR-10 from a local root, GPU shards) on tiny files: with
    --shard-device auto and no GPU the shards fall back to the CPU; the regime and deprune
    rows are made (--loss-points -100 puts every fixed budget in the regime)."""
    from test_data import _write_cifar

    _write_cifar(tmp_path / "cifar10", per_batch=10)
    res = run_bench("compression_regime", tmp_path, "--full-scale", "--data-dir", str(tmp_path / "cifar10"),
                    "--shard-device", "auto", "--clients", "1", "--shards", "1", "--budgets", "4", "--resolutions", "2",
                    "--epochs", "2", "--deprune-epochs", "1,1", "--batch-size", "25", "--loss-points", "-100")
    assert res["args"]["model"] == "vgg11" and res["args"]["dataset"] == "cifar10"
    assert [(r["method"], r["budget"], r["resolution"]) for r in res["rows"]] == [
        ("none", None, None), ("fixed", 4, 2), ("fixed (full budget)", 128, 2), ("deprune", 4, 2)]
    assert all(r["shard_devices"] == ["cpu"] for r in res["rows"])
    d = res["rows"][-1]
    assert d["schedule"] == "4x1 + 128x1" and "vs_fixed_points" in d and d["bytes_vs_none"] < 1


@pytest.mark.slow
def test_bottlefit_benchmark_quick(tmp_path):
    res = run_bench("bottlefit", tmp_path, "--quick", "--local", "--methods", "bottlefit,module")
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"teacher (no compression)", "bottlefit", "module"}
    bf = rows["bottlefit"]
    assert bf["accuracy"] == pytest.approx(bf["run_final_acc"]) and bf["bq_codec"] == "uint8"
    assert bf["bq_bytes_per_sample"] < 0.3 * bf["bytes_per_sample"] < rows["teacher (no compression)"]["bytes_per_sample"]
    assert bf["train_bytes_per_sample"] > 10 * bf["bytes_per_sample"]  # the teacher's activation travels in training
