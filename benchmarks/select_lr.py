"""selectLr ablation: deprune 4 -> 128 with γ in {1, 3, 10} (l_k = 1), same seed and data.

    python benchmarks/select_lr.py                 # ~4 min on 2 cores
    python benchmarks/select_lr.py --gammas 1,2 --train-subset 4096

Prints test accuracy per epoch for each γ and writes benchmarks/results/select_lr.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from raysplit.config import SplitConfig, TrainConfig
from raysplit.local import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gammas", default="1,3,10")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--train-subset", type=int, default=8192)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--epochs", default="2,1", help="epochs at B=4, B=128")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "select_lr.json")
    a = p.parse_args()
    epochs = tuple(int(e) for e in a.epochs.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in (float(v) for v in a.gammas.split(",")):
            cfg = TrainConfig(
                method="deprune", split=SplitConfig(model="vgg_small"), dataset="fashion-mnist",
                budgets=(4, 128), epochs_per_budget=epochs, lr=a.lr, gamma=g, lk=1,
                train_subset=a.train_subset, test_subset=a.test_subset, out=f"{tmp}/g{g}",
            )
            t0 = time.perf_counter()
            s = run(cfg, progress=False)
            ep = pq.read_table(f"{tmp}/g{g}/epochs.parquet").to_pandas()
            rows.append({"gamma": g, "lr_after_transition": a.lr * g, "test_accuracy": ep["test_accuracy"].round(4).tolist(),
                         "final_test_accuracy": s["final_test_accuracy"], "seconds": round(time.perf_counter() - t0, 1)})
            print(f"gamma={g:<5g} accuracy per epoch {rows[-1]['test_accuracy']}  ({rows[-1]['seconds']} s)", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "benchmark": "select_lr", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(), "args": vars(a) | {"out": str(a.out)}, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
