"""The run directory: config, summary.json, epochs/steps parquet tables, plots.

The same writer serves the local reference trainer and the cluster job, so their outputs
can be compared column by column.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SUMMARY_KEYS = (
    "method",
    "dataset",
    "model",
    "split_layer",
    "budgets",
    "epochs_per_budget",
    "codec",
    "final_test_accuracy",
    "bytes_up",
    "bytes_down",
    "samples",
    "wall_seconds",
)
EPOCH_COLUMNS = ("epoch", "budget", "lr", "train_loss", "test_accuracy", "bytes_up", "bytes_down")
STEP_COLUMNS = ("client", "epoch", "step", "budget", "bytes_up", "bytes_down", "latency", "loss")


def _table(rows: list[dict], required: tuple[str, ...], name: str) -> pa.Table:
    for i, r in enumerate(rows):
        missing = [c for c in required if c not in r]
        if missing:
            raise ValueError(f"{name} row {i} lacks columns {missing}")
    if not rows:
        return pa.table({c: pa.array([], pa.float64()) for c in required})
    cols = list(rows[0])
    return pa.table({c: [r[c] for r in rows] for c in cols})


def write_run(
    out: str | os.PathLike,
    *,
    config: dict,
    summary: dict,
    epochs: list[dict],
    steps: list[dict],
    plots: bool = True,
) -> Path:
    """Write everything a run produced; returns the run directory."""
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"summary lacks keys {missing}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    pq.write_table(_table(epochs, EPOCH_COLUMNS, "epochs"), out / "epochs.parquet")
    pq.write_table(_table(steps, STEP_COLUMNS, "steps"), out / "steps.parquet")
    if plots:
        plot_run(out, epochs, steps)
    return out


def plot_run(out: Path, epochs: list[dict], steps: list[dict]) -> None:
    """accuracy.png (test accuracy vs epoch, budget marked) and bytes.png (cumulative
    bytes up and down vs wall time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [r["epoch"] + 1 for r in epochs]
    ax.plot(ep, [100 * r["test_accuracy"] for r in epochs], marker="o", label="test accuracy")
    for i in range(1, len(epochs)):
        if epochs[i]["budget"] != epochs[i - 1]["budget"]:
            ax.axvline(ep[i] - 0.5, color="grey", ls="--", lw=0.8)
            ax.text(ep[i] - 0.45, ax.get_ylim()[0], f"B={epochs[i]['budget']}", fontsize=8, va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    if steps:
        rows = sorted(steps, key=lambda r: r.get("t", 0.0))
        t = [r.get("t", i) for i, r in enumerate(rows)]
        up = down = 0
        ups, downs = [], []
        for r in rows:
            up += r["bytes_up"]
            down += r["bytes_down"]
            ups.append(up / 1e6)
            downs.append(down / 1e6)
        ax.plot(t, ups, label="up (activations)")
        ax.plot(t, downs, label="down (gradients)")
        ax.legend()
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("cumulative MB")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bytes.png", dpi=100)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    """A short table for the end of a run."""

    def human(n: float) -> str:
        if n < 1024:
            return f"{n:.0f} B"
        e = min(int(math.log(n, 1024)), 3)
        return f"{n / 1024**e:.2f} {'BKMG'[e]}{'iB' if e else ''}"

    rows = [
        ("method", summary["method"]),
        ("dataset / model", f"{summary['dataset']} / {summary['model']} (split after layer {summary['split_layer']})"),
        ("budgets x epochs", f"{summary['budgets']} x {summary['epochs_per_budget']}"),
        ("codec", summary["codec"]),
    ]
    if "clients" in summary:
        procs = summary.get("client_actors")
        per = "" if procs is None else f" in {procs} actor process{'es' if procs != 1 else ''}"
        rows.append(("clients", f"{summary['clients']}{per}"))
    for k in ("shards", "mode"):
        if k in summary:
            rows.append((k, str(summary[k])))
    rows += [
        ("final test accuracy", f"{100 * summary['final_test_accuracy']:.2f} %"),
        ("bytes up / down", f"{human(summary['bytes_up'])} / {human(summary['bytes_down'])}"),
        ("samples", f"{summary['samples']}"),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("samples/s", f"{summary['samples'] / max(summary['wall_seconds'], 1e-9):.1f}"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
