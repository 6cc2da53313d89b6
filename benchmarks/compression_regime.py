"""Prune-Deprune's comparison (Fig. 8 shape) where it can show: the regime where fixed
compression loses, then deprune there, on the cluster.

1. The sweep: no compression (``--method none``: no module, every channel of l_n travels)
   and a fixed budget B for every B in --budgets and resolution factor r in --resolutions
   (``--method fixed --budgets B --resolution r``), all --epochs long.
2. The regime: every (B, r) whose final test accuracy is at least --loss-points below no
   compression's.
3. In that regime: deprune B -> --high (--deprune-epochs, the paper's 15:3 split scaled) at
   the same r, and, as the paper's "no-compression" at that r, the module at the full
   budget (``--method fixed --budgets 128 --resolution r``).

Every configuration runs once per seed (--seeds; single runs at lr 0.01 move by several
points from one epoch to the next, more than the effects in question), and every row
reports the mean final test accuracy with half the seeds' range, training bytes (activations up + gradients down,
exact codec sizes) per sample and both against no compression; deprune's row also against
fixed B at the same r (the paper's "high compression"). The paper claims deprune is within
0.5 points of no compression at 4x fewer bytes and 4 points better than high compression.

    python benchmarks/compression_regime.py               # ~40 min on 2 cores (cluster, 2 clients)
    python benchmarks/compression_regime.py --quick --local
    # the paper's scale, for a user with CIFAR-10 and GPU shard nodes (on their cluster):
    ray job submit --working-dir . -- python benchmarks/compression_regime.py --full-scale \
        --data-dir /data/cifar10 --address auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _runs as R  # noqa: E402

NAME = "compression_regime"
QUICK = dict(seeds="0", budgets="1,4", resolutions="1,4", epochs=2, deprune_epochs="1,1", train_subset=128, test_subset=64,
             batch_size=16, dataset="digits", high=128)
#: the paper's setting (Fig. 8): VGG11 on CIFAR-10, 15 epochs at B = 4 then 3 at 128, GPU shards
FULL_SCALE = dict(seeds="0", model="vgg11", dataset="cifar10", train_subset="all", test_subset="all", epochs=18,
                  deprune_epochs="15,3", batch_size=64, shard_device="cuda", clients=8, shards=2, lr=0.01)


def row_of(runs: list, method: str, budget: int | None, r: int | None) -> dict:
    """One configuration over its seeds: the mean of the runs' final test accuracies (the
    accuracy after the last epoch), each seed's, and the bytes (the same for every seed)."""
    s = runs[0].summary
    finals = [run.summary["final_test_accuracy"] for run in runs]
    return {"method": method, "budget": budget, "resolution": r, "schedule": " + ".join(
                f"{b}x{e}" for b, e in zip(s["budgets"], s["epochs_per_budget"])),
            "final_acc": sum(finals) / len(finals), "seed_finals": finals,
            "spread_points": 100 * (max(finals) - min(finals)) / 2,
            "bytes_per_sample": (s["bytes_up"] + s["bytes_down"]) / s["samples"],
            "up_per_sample": s["bytes_up"] / s["samples"], "shard_devices": s.get("shard_devices"),
            "accuracy": [run.accuracy for run in runs], "commands": [run.command for run in runs]}


def regime(rows: list[dict], none_acc: float, points: float) -> list[dict]:
    """The fixed-budget rows that lose at least ``points`` against no compression."""
    return [r for r in rows if r["method"] == "fixed" and 100 * (none_acc - r["final_acc"]) >= points]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="1,2,4", help="fixed budgets B of the sweep")
    ap.add_argument("--resolutions", default="1,2,4", help="resolution factors r of the sweep")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of every run")
    ap.add_argument("--deprune-epochs", default="5,1", help="epochs at B, then at --high (sum = --epochs)")
    ap.add_argument("--high", type=int, default=128, help="the budget deprune raises to (the split's channels)")
    ap.add_argument("--loss-points", type=float, default=2.0, help="a fixed budget is in the regime when it loses "
                    "at least this many points against no compression")
    ap.add_argument("--seeds", default="0,1", help="one run per seed for every configuration; accuracies are means")
    ap.add_argument("--shard-device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where the shards compute (auto: a GPU per shard when the cluster has them)")
    ap.add_argument("--full-scale", action="store_true",
                    help="the paper's scale: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in FULL_SCALE.items())
                    + " (options given explicitly still win); needs --data-dir with CIFAR-10")
    R.add_run_options(ap, NAME)
    a = R.parse(ap, argv, QUICK, FULL_SCALE, "full_scale")
    low, high_epochs = (int(v) for v in a.deprune_epochs.split(","))
    if low + high_epochs != a.epochs:
        ap.error(f"--deprune-epochs {a.deprune_epochs} must sum to --epochs {a.epochs} (the same training length)")
    common = R.job_args(a)
    runner = R.Runner(["--clients", str(a.clients), "--shards", str(a.shards), "--shard-device", a.shard_device],
                    local=a.local, out_dir=a.runs_dir, address=a.address)
    rows: list[dict] = []
    seeds = [int(v) for v in str(a.seeds).split(",")]

    def configuration(name: str, args: list[str], method: str, b: int | None, r: int | None) -> dict:
        runs = [runner.run(f"{name}_s{seed}", [*args, *common, "--seed", str(seed)]) for seed in seeds]
        row = row_of(runs, method, b, r)
        rows.append(row)
        return row

    try:
        none = configuration("none", ["--method", "none", "--epochs-per-budget", str(a.epochs)], "none", None, None)
        for r in (int(v) for v in a.resolutions.split(",")):
            for b in (int(v) for v in a.budgets.split(",")):
                configuration(f"fixed_B{b}_r{r}", ["--method", "fixed", "--budgets", str(b), "--resolution", str(r),
                                                   "--epochs-per-budget", str(a.epochs)], "fixed", b, r)
        lossy = regime(rows, none["final_acc"], a.loss_points)
        full = {r: configuration(f"fixed_B{a.high}_r{r}", ["--method", "fixed", "--budgets", str(a.high), "--resolution",
                                                         str(r), "--epochs-per-budget", str(a.epochs)],
                                 "fixed (full budget)", a.high, r)
                for r in sorted({x["resolution"] for x in lossy})}
        for x in lossy:
            b, r = x["budget"], x["resolution"]
            d = configuration(f"deprune_B{b}_r{r}", ["--method", "deprune", "--budgets", f"{b},{a.high}", "--resolution",
                                                     str(r), "--epochs-per-budget", a.deprune_epochs], "deprune", b, r)
            d["vs_fixed_points"] = 100 * (d["final_acc"] - x["final_acc"])
            d["vs_fixed_bytes"] = d["bytes_per_sample"] / x["bytes_per_sample"]
            d["vs_full_points"] = 100 * (d["final_acc"] - full[r]["final_acc"])
            d["vs_full_bytes"] = d["bytes_per_sample"] / full[r]["bytes_per_sample"]
    finally:
        runner.close()
    for x in rows:
        x["vs_none_points"] = 100 * (x["final_acc"] - none["final_acc"])
        x["bytes_vs_none"] = x["bytes_per_sample"] / none["bytes_per_sample"]
        x["in_regime"] = x in lossy
    cols = [("method", "method", ""), ("budget", "B", ""), ("resolution", "r", ""), ("schedule", "budgets x epochs", ""),
            ("final_acc", "final acc", ".4f"), ("spread_points", "± (points)", ".1f"),
            ("vs_none_points", "vs none (points)", "+.2f"), ("bytes_per_sample", "bytes/sample", ",.0f"),
            ("bytes_vs_none", "bytes vs none", ".4f"), ("vs_fixed_points", "vs fixed B (points)", "+.2f"),
            ("vs_full_points", "vs B=128 at r (points)", "+.2f")]
    print()
    print(C.text_table(rows, cols))
    command, where = R.command(NAME, argv), R.where(a) + ("" if a.local else f", shard device {a.shard_device}")
    md = (f"# Where fixed compression loses, and deprune there\n\n{a.model} on {a.dataset} ({a.train_subset} train / "
          f"{a.test_subset} test samples), batch {a.batch_size}, lr {a.lr}, {a.epochs} epochs per run, {where}; "
          f"seeds {a.seeds} (accuracy: the mean of the seeds' final test accuracies, ± half their range); "
          f"regime: fixed budgets losing >= {a.loss_points:g} points against no compression; deprune "
          f"B -> {a.high} over {a.deprune_epochs} epochs. Bytes: training traffic (up + down) per training sample.\n\n"
          + C.md_table(rows, cols) + f"\n\nReproduce: `{command}`\n\nCreated {C.now_iso()}.\n")
    result = {**R.header(NAME, command, a), "rows": rows,
              "regime": [{"budget": x["budget"], "resolution": x["resolution"]} for x in lossy]}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
