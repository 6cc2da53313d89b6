"""Accuracy vs. bytes on the wire: plain split learning, a fixed budget, and dePrune.

Trains the CPU-sized VGG (vgg_small, split after layer 4 = 128 channels at 8x8) on
Fashion-MNIST with the local reference trainer (``raysplit.local.run``), once per method,
with the same seed, data subset, batch size, learning rate and total epochs:

* ``none``    plain split learning: no compression module, all 128 channels as float32;
* ``fixed``   the compression module with one budget B (default 4) for every epoch;
* ``deprune`` budgets 4 -> 128, epochs split in the paper's 15:3 ratio (5:1 of 6 by
  default), selectLr with the trainer's gamma / l_k defaults at the transition (both
  recorded in the results; the paper boosts lr by gamma after a transition, the trainer's
  default is gamma=1, i.e. no boost).

Bytes are the exact sizes of the codec messages (activations up, gradients down) as
counted by the trainer (summary.json bytes_up / bytes_down); evaluation traffic is not
counted. Writes a JSON record and a markdown table and prints the table.

    python benchmarks/accuracy_bytes.py --train-subset 5000 --test-subset 1000 --epochs 6
    python benchmarks/accuracy_bytes.py --quick          # smoke check, tiny sizes
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (puts the checkout's raysplit first on sys.path)

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

import raysplit  # noqa: E402
from raysplit.config import TrainConfig  # noqa: E402
from raysplit.local import config_from_argv, parser, run  # noqa: E402

NAME = "accuracy_bytes"
HERE = C.HERE
ROOT = C.ROOT
METHODS = ("none", "fixed", "deprune")
QUICK = {"train_subset": 512, "test_subset": 256, "epochs": 2}


def deprune_epochs(total: int, given: str | None) -> tuple[int, int]:
    """Epochs at the low and the high budget: the paper's 15:3 (= 5:1) ratio, at least
    one epoch each, unless given explicitly as 'low,high'."""
    if given:
        low, high = (int(v) for v in given.split(","))
    else:
        high = max(1, round(total / 6))
        low = total - high
    if low < 1 or high < 1 or low + high != total:
        raise SystemExit(f"deprune epochs {low},{high} must be >= 1 each and sum to --epochs {total}")
    return low, high


def method_argv(method: str, a: argparse.Namespace, low: int, high: int, out: Path) -> list[str]:
    """The ``python -m raysplit.local`` arguments of one method's run."""
    common = [
        "--dataset", "fashion-mnist",
        "--model", "vgg_small",
        "--split-layer", "4",
        "--lr", str(a.lr),
        "--batch-size", str(a.batch_size),
        "--seed", str(a.seed),
        "--train-subset", str(a.train_subset),
        "--test-subset", str(a.test_subset),
        "--codec", "float32",
        "--out", str(out),
        "--no-progress",
    ]
    if a.threads:
        common += ["--threads", str(a.threads)]
    if method == "none":
        sched = ["--method", "none", "--epochs-per-budget", str(a.epochs)]
    elif method == "fixed":
        sched = ["--method", "fixed", "--budgets", str(a.fixed_budget), "--epochs-per-budget", str(a.epochs)]
    else:
        sched = [
            "--method", "deprune",
            "--budgets", a.deprune_budgets,
            "--epochs-per-budget", f"{low},{high}",
            "--gamma", str(a.gamma),
            "--lk", str(a.lk),
        ]
    return sched + common


def fmt_bytes(n: float) -> str:
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f} B"


def markdown(rows: list[dict], setup: dict) -> str:
    lines = [
        "# Accuracy vs. bytes: none / fixed / deprune",
        "",
        f"Fashion-MNIST ({setup['train_subset']} train / {setup['test_subset']} test samples, "
        f"class-stratified subset, seed {setup['seed']}), vgg_small split after layer 4 "
        f"(128 channels at 8x8), batch {setup['batch_size']}, SGD lr {setup['lr']} momentum 0.9, "
        f"{setup['epochs']} epochs per method, deprune selectLr gamma {setup['gamma']} l_k {setup['lk']}, "
        "float32 codec. Bytes = exact codec message sizes "
        "of training (activations up + gradients down); evaluation traffic not counted.",
        "",
        "| method | budgets x epochs | final test acc | best test acc | total bytes (up+down) "
        "| bytes up / sample | bytes vs none | saving vs none | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.get("bytes_vs_none")
        lines.append(
            f"| {r['method']} | {r['schedule']} | {100 * r['final_test_accuracy']:.2f} % "
            f"| {100 * r['best_test_accuracy']:.2f} % "
            f"| {fmt_bytes(r['bytes_total'])} ({r['bytes_total']:,}) "
            f"| {r['bytes_up_per_sample']:,.1f} "
            f"| {'' if ratio is None else f'{ratio:.4f} (1/{1 / ratio:.1f})'} "
            f"| {'' if ratio is None else f'{100 * (1 - ratio):.2f} %'} "
            f"| {r['wall_seconds']:.0f} |"
        )
    lines += ["", "Per-epoch test accuracy (%):", ""]
    for r in rows:
        accs = ", ".join(
            f"{100 * e['test_accuracy']:.1f} (B={e['budget']}"
            + ("" if e["lr"] == setup["lr"] else f", lr {e['lr']:g}") + ")"
            for e in r["epochs"]
        )
        lines.append(f"- {r['method']}: {accs}")
    lines += ["", "Reproduce:", "", "```", setup["command"], "```", ""]
    m = setup["machine"]
    lines.append(
        f"Machine: {m['nproc']} CPUs, torch {m['torch']}, python {m['python']}, {setup['created']}; "
        f"benchmark wall time {setup['wall_seconds']:.0f} s."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-subset", type=int, default=5000, help="training samples (stratified subset)")
    ap.add_argument("--test-subset", type=int, default=1000, help="test samples (stratified subset)")
    ap.add_argument("--epochs", type=int, default=6, help="total epochs, the same for every method")
    ap.add_argument("--deprune-epochs", default=None, help="low,high epochs of deprune (default: 5:1 split)")
    ap.add_argument("--deprune-budgets", default="4,128")
    ap.add_argument("--fixed-budget", type=int, default=4)
    ap.add_argument("--gamma", type=float, default=TrainConfig.gamma,
                    help="selectLr factor of deprune (default: the trainer's, %(default)s)")
    ap.add_argument("--lk", type=int, default=TrainConfig.lk,
                    help="selectLr epochs of deprune (default: the trainer's, %(default)s)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of none,fixed,deprune")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/raysplit-bench/accuracy_bytes"),
                    help="where the per-method run directories go")
    ap.add_argument("--results", type=Path, default=HERE / "results",
                    help="folder for accuracy_bytes.json / .md")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke check: {QUICK['train_subset']}/{QUICK['test_subset']} samples, "
                    f"{QUICK['epochs']} epochs (unless given explicitly), results written to --out-dir "
                    "unless --results is given")
    a = ap.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    explicit_results = any(t == "--results" or t.startswith("--results=") for t in given)
    if a.quick:  # smaller defaults; sizes given on the command line still win
        ap.set_defaults(**QUICK)
        a = ap.parse_args(argv)
        if not explicit_results:
            a.results = a.out_dir
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    low, high = deprune_epochs(a.epochs, a.deprune_epochs)

    command = "python benchmarks/accuracy_bytes.py " + shlex.join(given)
    machine = {
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "raysplit": getattr(raysplit, "__version__", None),
        "loadavg_at_start": list(os.getloadavg()),
    }
    t0 = time.perf_counter()
    rows = []
    for m in methods:
        out = a.out_dir / m
        margv = method_argv(m, a, low, high, out)
        # the configuration exactly as `python -m raysplit.local <margv>` builds it
        cfg = config_from_argv(parser(), margv).replace(progress=sys.stderr.isatty())
        print(f"[{m}] python -m raysplit.local {shlex.join(margv)}", flush=True)
        s = run(cfg)
        ep = sorted(pq.read_table(out / "epochs.parquet").to_pylist(), key=lambda e: e["epoch"])
        total = s.bytes_up + s.bytes_down
        rows.append({
            "method": m,
            "schedule": " + ".join(f"{b}x{e}" for b, e in zip(s.budgets, s.epochs_per_budget)),
            "budgets": s.budgets,
            "epochs_per_budget": s.epochs_per_budget,
            "final_test_accuracy": s.final_test_accuracy,
            "best_test_accuracy": max(e["test_accuracy"] for e in ep),
            "bytes_up": s.bytes_up,
            "bytes_down": s.bytes_down,
            "bytes_total": total,
            "samples": s.samples,
            "bytes_up_per_sample": s.bytes_up / s.samples,
            "bytes_down_per_sample": s.bytes_down / s.samples,
            "wall_seconds": s.wall_seconds,
            "final_filter_on": None if s.final_filter is None else sum(v > 0.5 for v in s.final_filter),
            "epochs": [
                {k: e[k] for k in ("epoch", "budget", "lr", "train_loss", "test_accuracy", "bytes_up", "bytes_down")}
                for e in ep
            ],
            "run_dir": str(out),
            "local_command": "python -m raysplit.local " + shlex.join(margv),
        })
        print(f"[{m}] acc {100 * s.final_test_accuracy:.2f} %  bytes {fmt_bytes(total)}  "
              f"{s.wall_seconds:.0f} s", flush=True)
    none = next((r for r in rows if r["method"] == "none"), None)
    for r in rows:
        r["bytes_vs_none"] = None if none is None else r["bytes_total"] / none["bytes_total"]
        r["accuracy_vs_none_pp"] = None if none is None else 100 * (r["final_test_accuracy"] - none["final_test_accuracy"])

    setup = {
        "dataset": "fashion-mnist",
        "model": "vgg_small",
        "split_layer": 4,
        "wire_shape": [128, 8, 8],
        "train_subset": a.train_subset,
        "test_subset": a.test_subset,
        "subset": "class-stratified, seeded (raysplit.data load_dataset limit=)",
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "optimizer": "SGD momentum 0.9, weight decay 5e-4",
        "gamma": a.gamma,
        "lk": a.lk,
        "seed": a.seed,
        "codec": "float32",
        "bytes": "exact codec message sizes of training steps (up = activations, down = gradients); eval not counted",
        "quick": a.quick,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - t0,
        "machine": machine | {"loadavg_at_end": list(os.getloadavg())},
    }
    md = markdown(rows, setup)
    print()
    print(md)
    C.write_results(NAME, {"benchmark": NAME, "setup": setup, "results": rows}, md, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
