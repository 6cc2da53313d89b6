"""The run directory's plots.

``accuracy.png``: test accuracy per epoch (integer epochs, numbered from 1), with each
budget transition marked. ``bytes.png``: cumulative training traffic over wall time in
two panels, activations up and gradients down, each on its own axis: at a budget of
4/128 both are small and nearly equal, and on one axis the two curves sat on top of
each other. With an emulated link also ``accuracy_time.png`` (accuracy vs the emulated
clock) and ``bytes_clients.png`` (each client's cumulative wire bytes vs its clock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from raysplit.records.rows import EpochRow, StepRow


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(path: Path, epochs: Sequence[EpochRow]):
    """Test accuracy vs epoch; returns the figure's axes (for tests), the file is written."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [r.epoch + 1 for r in epochs]
    ax.plot(ep, [100 * r.test_accuracy for r in epochs], marker="o", label="test accuracy")
    for prev, cur in zip(epochs, epochs[1:]):
        if cur.budget != prev.budget:
            ax.axvline(cur.epoch + 0.5, color="grey", ls="--", lw=0.8)
            ax.annotate(f"B={cur.budget}", (cur.epoch + 0.55, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    if epochs:
        ax.set_title(f"B = {epochs[0].budget}" + "".join(
            f" → {c.budget}" for p, c in zip(epochs, epochs[1:]) if c.budget != p.budget), fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ax


def plot_bytes(path: Path, steps: Sequence[StepRow]):
    """Cumulative MB up (top) and down (bottom) vs wall time; returns the two axes."""
    plt = _pyplot()
    fig, (up_ax, down_ax) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    rows = sorted(steps, key=lambda r: r.time)
    t = [r.time for r in rows]
    for ax, key, label, color in ((up_ax, "bytes_up", "up: activations", "C0"),
                                  (down_ax, "bytes_down", "down: gradients", "C1")):
        total, ys = 0, []
        for r in rows:
            total += getattr(r, key)
            ys.append(total / 1e6)
        ax.plot(t, ys, color=color, label=label)
        ax.set_ylabel("cumulative MB")
        ax.set_title(label + (f" ({ys[-1]:.2f} MB)" if ys else ""), fontsize=9)
        ax.grid(alpha=0.3)
    down_ax.set_xlabel("wall time since start (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return up_ax, down_ax


def plot_accuracy_time(path: Path, epochs: Sequence[EpochRow]):
    """Test accuracy vs the emulated clock at each epoch's end (runs with a link)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r.sim_time for r in epochs], [100 * r.test_accuracy for r in epochs], marker="o")
    for r in epochs:
        ax.annotate(f"B={r.budget}", (r.sim_time, 100 * r.test_accuracy), fontsize=7, textcoords="offset points",
                    xytext=(3, -10))
    ax.set_xlabel("emulated time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs emulated time", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ax


def plot_client_bytes(path: Path, steps: Sequence[StepRow]):
    """Each client's cumulative bytes (up + down, on the wire) vs its clock: emulated when
    the run has a link, wall time otherwise."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    emulated = any(r.sim_time == r.sim_time for r in steps)
    by: dict[int, list] = {}
    for r in steps:
        by.setdefault(r.client, []).append(r)
    for c in sorted(by):
        rows = sorted(by[c], key=lambda r: (r.sim_time if emulated else r.time))
        total, xs, ys = 0, [], []
        for r in rows:
            total += r.wire_bytes_up + r.wire_bytes_down
            xs.append(r.sim_time if emulated else r.time)
            ys.append(total / 1e6)
        ax.plot(xs, ys, lw=1, label=f"client {c}")
    ax.set_xlabel("emulated time (s)" if emulated else "wall time since start (s)")
    ax.set_ylabel("cumulative MB on the wire (up + down)")
    if len(by) <= 16:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ax


def plot_run(out: Path, epochs: Sequence[EpochRow], steps: Sequence[StepRow]) -> None:
    plot_accuracy(Path(out) / "accuracy.png", epochs)
    plot_bytes(Path(out) / "bytes.png", steps)
    if any(r.sim_time == r.sim_time for r in epochs):
        plot_accuracy_time(Path(out) / "accuracy_time.png", epochs)
        plot_client_bytes(Path(out) / "bytes_clients.png", steps)
