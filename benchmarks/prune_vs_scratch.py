"""Prune (Prune-Deprune Algorithm 3) against training each budget from scratch, on the cluster.

One prune run (``jobs/prune.py``: the full budget for --base-epochs, then each smaller
budget for --transfer-epochs, resetPrune and selectLr at every step down) and, for every
smaller budget B, one run that trains B from scratch (``jobs/deprune.py --method fixed
--budgets B``) for --scratch-epochs, all with the same seed, data, batches and cluster.
The full budget's scratch run is the prune run's first phase (the same configuration).

Per budget: the scratch run's final test accuracy, how many epochs each reaches 95 % of
it in (the prune-derived model counted from its transfer), and the ratio, in the layout
of the paper's Fig. 12/13 (table + ``prune_vs_scratch.png``: the runs over the epochs, and
every budget's curve from its own start).

An epoch is ``--max-batches`` steps per client (default 8 steps of 64 samples on each of
2 clients = 1,024 samples, a quarter of the 4,096-sample training subset), so progress is
seen at a finer grain than whole passes; the table gives both.

    python benchmarks/prune_vs_scratch.py                 # ~25 min on 2 cores (cluster, 2 clients)
    python benchmarks/prune_vs_scratch.py --quick --local # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _runs as R  # noqa: E402

NAME = "prune_vs_scratch"
QUICK = dict(budgets="128,8", base_epochs=2, transfer_epochs=1, scratch_epochs=2, train_subset=128, test_subset=64,
             max_batches=2, batch_size=16, dataset="digits")


def final(acc: list[float], window: int) -> float:
    """The final accuracy: the mean of the last ``window`` evaluations."""
    return sum(acc[-window:]) / len(acc[-window:])


def analyse(prune_acc: list[float], plan: list[tuple[int, int, int]], scratch: dict[int, list[float]],
            target: float, window: int) -> list[dict]:
    """Per budget: final accuracies, epochs to ``target`` x the scratch final accuracy.

    ``plan`` is the prune run's (budget, first epoch, epochs) per phase; ``scratch`` the
    accuracy per epoch of each budget trained from scratch (the first phase for the full
    budget)."""
    rows = []
    for i, (b, first, n) in enumerate(plan):
        derived = prune_acc[first : first + n]
        s = scratch[b]
        threshold = target * final(s, window)
        row = {"budget": b, "scratch_final": final(s, window), "threshold": threshold,
               "scratch_epochs": len(s), "scratch_to_target": R.epochs_to_reach(s, threshold),
               "prune_final": final(derived, window) if i else None, "prune_epochs": n if i else None,
               "prune_to_target": R.epochs_to_reach(derived, threshold) if i else None}
        if i and row["prune_to_target"] and row["scratch_to_target"]:
            row["speedup"] = row["scratch_to_target"] / row["prune_to_target"]
        rows.append(row)
    return rows


def plot(path: Path, prune_acc, plan, scratch, rows, epoch_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7.5))
    x = range(1, len(prune_acc) + 1)
    top.plot(x, [100 * a for a in prune_acc], color="black", lw=2, label="prune " + " → ".join(str(b) for b, *_ in plan))
    for k, (b, first, n) in enumerate(plan):
        color = f"C{k}"
        top.plot(range(1, len(scratch[b]) + 1), [100 * a for a in scratch[b]], color=color, ls="--",
                 label=f"B={b} from scratch" if k else f"B={b} (prune's first phase)")
        if k:
            top.axvline(first + 0.5, color="grey", lw=0.8, ls=":")
            bottom.plot(range(1, n + 1), [100 * a for a in prune_acc[first : first + n]], color=color, lw=2,
                        marker="o", ms=3, label=f"B={b} derived by prune (from its transfer)")
            bottom.plot(range(1, len(scratch[b]) + 1), [100 * a for a in scratch[b]], color=color, ls="--",
                        label=f"B={b} from scratch")
            bottom.axhline(100 * rows[k]["threshold"], color=color, lw=0.8, ls=":")
    top.set_title("test accuracy over the runs", fontsize=9)
    bottom.set_title("each budget from its own start; dotted: 95 % of its scratch run's final accuracy", fontsize=9)
    for ax in (top, bottom):
        ax.set_xlabel(epoch_label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="128,32,4", help="descending; the first is the full budget")
    ap.add_argument("--base-epochs", type=int, default=16, help="epochs at the full budget")
    ap.add_argument("--transfer-epochs", type=int, default=8, help="epochs at each smaller budget after the transfer")
    ap.add_argument("--scratch-epochs", type=int, default=16, help="epochs of each from-scratch run")
    ap.add_argument("--target", type=float, default=0.95, help="fraction of the scratch final accuracy to reach")
    ap.add_argument("--final-window", type=int, default=1,
                    help="final accuracy = mean of the last N evaluations (1: the last)")
    ap.add_argument("--max-batches", type=int, default=8, help="steps per client and epoch")
    R.add_run_options(ap, NAME)
    a = R.parse(ap, argv, QUICK)
    budgets = [int(b) for b in a.budgets.split(",")]
    if budgets != sorted(budgets, reverse=True) or len(budgets) < 2:
        ap.error(f"--budgets {a.budgets}: at least two, descending (the first is the full budget)")
    common = [*R.job_args(a), "--max-batches", str(a.max_batches)]
    runner = R.Runner(["--clients", str(a.clients), "--shards", str(a.shards)], local=a.local, out_dir=a.runs_dir,
                      address=a.address)
    try:
        epochs = [a.base_epochs] + [a.transfer_epochs] * (len(budgets) - 1)
        prune = runner.run("prune", ["--method", "prune", "--budgets", a.budgets, "--epochs-per-budget", ",".join(map(str, epochs)),
                                     *common], job="prune")
        scratch_runs = {b: runner.run(f"scratch_{b}", ["--method", "fixed", "--budgets", str(b),
                                                       "--epochs-per-budget", str(a.scratch_epochs), *common])
                        for b in budgets[1:]}
    finally:
        runner.close()
    plan, first = [], 0
    for b, n in zip(budgets, epochs):
        plan.append((b, first, n))
        first += n
    scratch = {budgets[0]: prune.accuracy[: a.base_epochs], **{b: r.accuracy for b, r in scratch_runs.items()}}
    rows = analyse(prune.accuracy, plan, scratch, a.target, a.final_window)
    clients = 1 if a.local else a.clients
    per_epoch = clients * a.max_batches * a.batch_size
    passes = per_epoch / int(a.train_subset)
    for r in rows:
        for k in ("scratch_to_target", "prune_to_target"):
            r[k.replace("to_target", "passes")] = None if r[k] is None else r[k] * passes
    epoch_label = f"epoch ({per_epoch:,} samples = {passes:.3g} passes of the {int(a.train_subset):,} training samples)"
    a.out_dir.mkdir(parents=True, exist_ok=True)
    plot(a.out_dir / f"{NAME}.png", prune.accuracy, plan, scratch, rows, epoch_label)
    cols = [("budget", "B", "d"), ("scratch_final", "scratch final acc", ".4f"),
            ("scratch_to_target", "scratch epochs to 95 %", ""), ("prune_final", "prune final acc", ".4f"),
            ("prune_to_target", "prune epochs to 95 % (after transfer)", ""), ("speedup", "speedup", ".1f")]
    print()
    print(C.text_table(rows, cols))
    command = R.command(NAME, argv)
    md = (f"# Prune vs training from scratch\n\n{a.model} on {a.dataset} ({a.train_subset} train / {a.test_subset} test "
          f"samples), batch {a.batch_size}, lr {a.lr}, {R.where(a)}; "
          f"an epoch = {a.max_batches} steps per client = {per_epoch} samples ({passes:.3g} passes). Prune: "
          f"{' -> '.join(map(str, budgets))} over {' + '.join(map(str, epochs))} epochs; from scratch: "
          f"{a.scratch_epochs} epochs per budget. Final accuracy = mean of the last {a.final_window} evaluation(s); "
          f"target = {a.target:g} x the scratch final accuracy.\n\n"
          + C.md_table(rows, cols) + f"\n\n![prune vs scratch]({NAME}.png)\n\nReproduce: `{command}`\n\nRuns:\n\n"
          + "\n".join(f"- `{r.command}`" for r in [prune, *scratch_runs.values()]) + f"\n\nCreated {C.now_iso()}.\n")
    result = {**R.header(NAME, command, a),
              "samples_per_epoch": per_epoch, "passes_per_epoch": passes, "rows": rows,
              "runs": [{"name": r.name, "command": r.command, "accuracy": r.accuracy, "seconds": r.seconds,
                        "summary": r.summary} for r in [prune, *scratch_runs.values()]]}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
