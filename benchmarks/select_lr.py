"""selectLr ablation: deprune 4 -> 128 with γ in {1, 3, 10} (l_k = 1), same seed and data.

Each γ is one run of the local reference trainer (``raysplit.local.run``); the per-epoch
test accuracy and learning rate are taken from the EpochRows the run hands its callbacks
(the same rows as the run directory's ``epochs.parquet``).

    python benchmarks/select_lr.py                 # ~4 min on 2 cores
    python benchmarks/select_lr.py --gammas 1,2 --train-subset 4096
    python benchmarks/select_lr.py --quick         # smoke run

Prints test accuracy per epoch for each γ and writes benchmarks/results/select_lr.json
(and .md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "select_lr"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gammas", default="1,3,10")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--train-subset", type=int, default=8192)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--epochs", default="2,1", help="epochs at B=4, B=128")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: gammas 1,3, 64 train / 50 test samples, 1 epoch per budget (unless given "
                   "explicitly)")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON file to write (the .md goes next to it); default: <out-dir>/select_lr.json")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for select_lr.json / .md "
                   "(default: benchmarks/results)")
    a = p.parse_args(argv)
    if a.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(gammas="1,3", train_subset=64, test_subset=50, epochs="1,1")
        a = p.parse_args(argv)
    epochs = tuple(int(e) for e in a.epochs.split(","))

    from raysplit.config import SplitConfig, TrainConfig
    from raysplit.local import run
    from raysplit.observability.callbacks import StepCollector

    machine = C.machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in (float(v) for v in a.gammas.split(",")):
            cfg = TrainConfig(
                method="deprune", split=SplitConfig(model="vgg_small"), dataset="fashion-mnist",
                budgets=(4, 128), epochs_per_budget=epochs, lr=a.lr, gamma=g, lk=1,
                train_subset=a.train_subset, test_subset=a.test_subset, out=f"{tmp}/g{g}", progress=False,
            )
            col = StepCollector()  # keeps the run's StepRows and EpochRows
            t0 = time.perf_counter()
            s = run(cfg, callbacks=[col])
            ep = sorted(col.epochs, key=lambda e: e.epoch)
            rows.append({"gamma": g, "lr_after_transition": a.lr * g,
                         "budget": [e.budget for e in ep], "lr": [e.lr for e in ep],
                         "test_accuracy": [round(e.test_accuracy, 4) for e in ep],
                         "final_test_accuracy": s.final_test_accuracy, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"gamma={g:<5g} accuracy per epoch {rows[-1]['test_accuracy']}  ({rows[-1]['seconds']} s)", flush=True)
    out_dir, name = (a.out.parent, a.out.stem) if a.out is not None else (a.out_dir, NAME)
    cols = [("gamma", "gamma", "g"), ("lr_after_transition", "lr after transition", "g"),
            ("test_accuracy", "test accuracy per epoch", ""), ("final_test_accuracy", "final", ".4f"),
            ("seconds", "s", ".1f")]
    print()
    print(C.text_table(rows, cols))
    md = (f"# selectLr ablation: deprune 4 -> 128, epochs {a.epochs}, l_k = 1\n\n"
          f"vgg_small, Fashion-MNIST ({a.train_subset} train / {a.test_subset} test samples), lr {a.lr}; "
          f"the learning rate is multiplied by gamma for the first epoch after the transition.\n"
          f"Created {C.now_iso()}.\n\n" + C.md_table(rows, cols))
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    C.write_results(name, {"benchmark": NAME, "date": C.now_iso(), "machine": machine, "args": args, "rows": rows},
                    md, out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
