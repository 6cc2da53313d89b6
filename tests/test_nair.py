"""NAIR's fine-tuning variants and the job end to end (jobs/nair.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raysplit.compression.slices import filter_importance, penalty
from raysplit.data import ArrayDataset
from raysplit.training.slice_tuning import VARIANTS, SliceObjective, evaluate, make_objective, train_slices

ROOT = Path(__file__).resolve().parent.parent


def _tiny(seed=0):
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 96)
    x = rng.standard_normal((96, 1, 6, 6)).astype(np.float32) + y[:, None, None, None].astype(np.float32)
    return head, tail, ArrayDataset("toy", x, y, 3)


def test_variants_rank_weight_and_penalise_as_specified():
    head, _, _ = _tiny()
    with torch.no_grad():
        head[0].weight.fill_(1.0)  # every kernel's L1 norm is 9
        head[1].weight.copy_(torch.arange(1.0, 9.0))  # folded importance grows with the channel
    nair = make_objective("nair", head, 8, 4, lam=0.5)
    assert nair.order.order[:2] == (7, 6) and nair.order.counts == (2, 2, 2, 2) and nair.lam == 0.5
    assert nair.weights[-1] == 1.0 and list(nair.weights[:-1]) == sorted(nair.weights[:-1], reverse=True)
    clio = make_objective("clio", head, 8, 4)
    assert clio.order.order == tuple(range(8)) and clio.weights == (1.0, 0.75, 0.5, 0.25) and clio.lam == 0
    assert make_objective("nair-no-penalty", head, 8, 4).lam == 0
    assert make_objective("nair-no-weights", head, 8, 4, lam=1.0).weights == (1.0,) * 4
    assert make_objective("plain", head, 8, 4).order.n_slices == 1
    raw = make_objective("nair", head, 8, 4, fold_bn=False)  # the kernel alone ranks otherwise
    assert raw.order.importance != nair.order.importance
    with pytest.raises(ValueError, match="not fine-tuned"):
        make_objective("original", head, 8, 4)
    assert set(VARIANTS) >= {"original", "clio", "nair", "nair-no-penalty", "nair-no-weights"}


def test_fine_tuning_with_the_penalty_pushes_the_rest_down_and_is_reproducible():
    runs = []
    for lam in (0.0, 1.0, 1.0):
        head, tail, data = _tiny()
        obj = make_objective("nair", head, 8, 4, lam=lam)
        conv, bn = head[0], head[1]
        with torch.no_grad():
            p0 = float(penalty(filter_importance(conv, bn), obj.order))
        logs = train_slices(head, tail, 8, data, obj, epochs=3, lr=0.05, batch_size=32, seed=3)
        with torch.no_grad():
            p1 = float(penalty(filter_importance(conv, bn), obj.order))
        runs.append((p1 / p0, logs[-1].loss, evaluate(head, tail, data, obj.order)))
        assert len(logs) == 3 and len(logs[-1].slice_losses) == 4 and np.isfinite(logs[-1].loss)
    assert runs[1][0] < runs[0][0]  # the penalty shrank the filters outside the first slice
    assert runs[1][1] == runs[2][1] and np.array_equal(runs[1][2], runs[2][2])  # same seed, same run
    acc = runs[0][2]
    assert acc.shape == (4,) and (0 <= acc).all() and (acc <= 1).all()
    with pytest.raises(ValueError, match="epochs >= 1"):
        train_slices(head, tail, 8, data, SliceObjective.plain(8), epochs=0, lr=0.1, batch_size=8)


@pytest.mark.slow
def test_nair_job_end_to_end(tmp_path):
    out = tmp_path / "nair"
    r = subprocess.run([sys.executable, "jobs/nair.py", "--dataset", "digits", "--image-size", "16",
                        "--train-subset", "192", "--test-subset", "48", "--original-epochs", "1", "--epochs", "1",
                        "--batch-size", "32", "--slices", "4", "--threads", "1", "--no-progress",
                        "--variants", "original,clio,nair,module", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert list(s["no_deadline_accuracy"]) == ["original", "clio", "nair", "module"]
    assert len(s["deadlines_s"]) == 4 and s["deadlines_s"] == sorted(s["deadlines_s"])  # 1, 2, 3, 4 slices
    rows = json.loads((out / "deadlines.json").read_text())
    nair_rows = [r for r in rows if r["method"] == "nair"]
    assert [r["mean_slices"] for r in nair_rows] == [1.0, 2.0, 3.0, 4.0, 4.0]  # constant link: k slices at deadline k
    assert all(r["answered"] == 1.0 for r in nair_rows)
    from raysplit.data import load_dataset
    from raysplit.inference import load_model

    m = load_model(out / "models" / "nair.pt")
    assert m.method == "nair" and m.slices.n_slices == 4
    test = load_dataset("digits", "test", image_size=16, seed=0, limit=48)
    for k, r in zip(range(1, 5), nair_rows):
        assert m.accuracy(test, slices=k) == pytest.approx(r["accuracy"])  # the table is the model's
    assert (out / "module" / "models").is_dir() and (out / "accuracy_latency.png").stat().st_size > 1000
    assert "| module |" in (out / "table.md").read_text()
    bad = subprocess.run([sys.executable, "jobs/nair.py", "--variants", "nair,foo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "unknown variant(s) foo; allowed: original" in bad.stderr
