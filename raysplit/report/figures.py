"""The report's figures, each a PNG (bytes) drawn with matplotlib's object API.

Readability rules every figure follows (issue 13): epochs are integers numbered from 1,
every axis says its unit, up and down traffic differ in colour *and* line style (or
hatching), labels sit inside their own panel (constrained layout, no text on text), and
budget phases are shaded and named once at the top of their span. ``Figure`` objects are
made without pyplot, so nothing global is touched and a job's process is left as it was.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from raysplit.report.data import Run, budget_changes, epoch_sim_time

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UP = dict(color="#1f6fb4", ls="-", label="up: activations")
DOWN = dict(color="#e4731b", ls="--", label="down: gradients")
PHASE_COLOURS = ("#f2f2f2", "#ffffff")
DPI = 100
MAX_DOTS = 20_000  # step dots drawn in the latency figure
MAX_POINTS = 5_000  # points of a cumulative-traffic line


def _figure(w: float, h: float, rows: int = 1, cols: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def byte_unit(max_bytes: float) -> tuple[float, str]:
    """The divisor and name that keep ``max_bytes`` between 1 and 1024 (B, KiB, MiB, GiB)."""
    for i, name in enumerate(("B", "KiB", "MiB", "GiB")):
        if max_bytes < 1024 ** (i + 1) or name == "GiB":
            return float(1024**i), name
    raise AssertionError  # pragma: no cover


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, nbins="auto"))


def _shade_phases(ax, starts: list[float], ends: list[float], budgets: list[int]) -> None:
    """Alternate background bands, one per budget phase, each named once at its top when
    the band is wide enough for its name (a narrow band stays unnamed, never overprinted)."""
    from matplotlib.transforms import blended_transform_factory

    tr = blended_transform_factory(ax.transData, ax.transAxes)
    span = max(ends[-1] - starts[0], 1e-12)
    for i, (a, b, budget) in enumerate(zip(starts, ends, budgets)):
        ax.axvspan(a, b, color=PHASE_COLOURS[i % 2], zorder=0, lw=0)
        if i:
            ax.axvline(a, color="#888888", ls=":", lw=0.9, zorder=1)
        label = f"B={budget}"
        if (b - a) / span >= 0.025 * len(label):
            ax.text((a + b) / 2, 0.98, label, transform=tr, ha="center", va="top", fontsize=8, color="#444444")


def train_start(run: Run) -> float:
    """Wall time of the first step (before it: data loading and actor start-up)."""
    return float(run.steps["time"].min()) - float(run.steps["latency"][run.steps["time"].argmin()]) if run.n_steps else 0.0


def _legend_above(fig, ax, ncols: int = 4) -> None:
    """The legend in a row above the panels: it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(ncols, len(handles)), fontsize=8,
                   frameon=False)


def _phases(values: np.ndarray, budgets: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal budget: (first index, last index, budget)."""
    out, start = [], 0
    for i in range(1, len(budgets) + 1):
        if i == len(budgets) or budgets[i] != budgets[start]:
            out.append((start, i - 1, int(budgets[start])))
            start = i
    return out


def accuracy_figure(run: Run) -> Figure | None:
    """Test accuracy against epoch, against wall time, and (with a link) simulated time."""
    e = run.epochs
    if not run.n_epochs:
        return None
    acc = 100 * e["test_accuracy"].astype(float)
    epoch = e["epoch"].astype(int) + 1
    panels = [("epoch", epoch.astype(float), "epoch"), ("wall time since the run started (s)", e["time"], "time")]
    if run.has_link():
        panels.append(("simulated time (s)", epoch_sim_time(run), "sim"))
    fig, axes = _figure(4.2 * len(panels), 3.4, 1, len(panels), sharey=True)
    budgets = e["budget"].astype(int)
    for ax, (xlabel, x, kind) in zip(axes[0], panels):
        x = np.asarray(x, dtype=float)
        ph = _phases(x, budgets)
        if kind == "epoch":
            starts = [x[a] - 0.5 for a, _, _ in ph]
            ends = [x[b] + 0.5 for _, b, _ in ph]
        else:
            # a phase spans from the end of the epoch before it to the end of its last epoch
            t0 = train_start(run) if kind == "time" else 0.0
            starts = [t0 if a == 0 else x[a - 1] for a, _, _ in ph]
            ends = [x[b] for _, b, _ in ph]
        _shade_phases(ax, starts, ends, [b for _, _, b in ph])
        ax.plot(x, acc, marker="o", color="#2a7a2a", zorder=3)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, zorder=2)
        if kind == "epoch":
            _integer_axis(ax.xaxis)
            ax.set_xlim(starts[0], ends[-1])
        else:
            ax.set_xlim(starts[0], starts[0] + max(ends[-1] - starts[0], 1e-9) * 1.03)
    axes[0][0].set_ylabel("test accuracy (%)")
    top = max(100.0, float(np.nanmax(acc)) if np.isfinite(acc).any() else 100.0)
    axes[0][0].set_ylim(0, top * 1.12)  # head room for the B= labels
    return fig


def _cumulative(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The running total from 0, thinned to at most MAX_POINTS points (the last one kept):
    a line through every one of 10^5 steps draws no differently, only slower."""
    x, y = np.concatenate([[times[0]], times]), np.concatenate([[0.0], np.cumsum(values.astype(float))])
    if len(x) > MAX_POINTS:
        keep = np.unique(np.r_[np.linspace(0, len(x) - 1, MAX_POINTS).astype(int), len(x) - 1])
        x, y = x[keep], y[keep]
    return x, y


def traffic_figure(run: Run) -> Figure | None:
    """Cumulative bytes over wall time: up and down in their own panels (at B=4 of 128 the
    two curves are nearly equal and would hide each other on one axis)."""
    s = run.steps
    if not run.n_steps:
        return None
    t = s["time"].astype(float)
    total = max(float(s["bytes_up"].sum()), float(s["bytes_down"].sum()), 1.0)
    div, unit = byte_unit(total)
    fig, axes = _figure(8.4, 4.6, 2, 1, sharex=True)
    for ax, col, style in ((axes[0][0], "bytes_up", UP), (axes[1][0], "bytes_down", DOWN)):
        x, y = _cumulative(t, s[col])
        ax.plot(x, y / div, color=style["color"], ls=style["ls"], lw=1.8, label=style["label"])
        if run.has_link() and f"wire_{col}" in s:
            wx, wy = _cumulative(t, s[f"wire_{col}"])
            ax.plot(wx, wy / div, color=style["color"], ls=":", lw=1.2, label="on the wire (with packet overhead)")
        ax.set_ylabel(f"cumulative {unit}")
        ax.set_title(f"{style['label']}: {y[-1] / div:,.2f} {unit} in all", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if len(ax.lines) > 1:
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        for ch in budget_changes(run)[:1]:  # the first change is where traffic bends
            ax.axvline(ch["time"], color="#888888", ls=":", lw=0.9)
    axes[1][0].set_xlabel("wall time since the run started (s)")
    return fig


def clients_figure(run: Run) -> Figure | None:
    """Training bytes per client, up and down side by side (colour + hatching)."""
    s = run.steps
    if not run.n_steps:
        return None
    clients = run.clients
    up = np.array([s["bytes_up"][s["client"] == c].sum() for c in clients], dtype=float)
    down = np.array([s["bytes_down"][s["client"] == c].sum() for c in clients], dtype=float)
    div, unit = byte_unit(max(up.max(initial=0), down.max(initial=0), 1.0))
    n = len(clients)
    fig, axes = _figure(min(max(5.0, 0.32 * n + 2.5), 12.0), 3.4)
    ax = axes[0][0]
    x = np.arange(n)
    w = 0.4
    ax.bar(x - w / 2, up / div, w, color=UP["color"], label=UP["label"])
    ax.bar(x + w / 2, down / div, w, color="white", edgecolor=DOWN["color"], hatch="///", label=DOWN["label"])
    failed = {int(c) for c in run.failed_clients}
    step = max(1, math.ceil(n / 32))
    ax.set_xticks(x[::step], [f"{c}{'*' if c in failed else ''}" for c in clients][::step], fontsize=8)
    ax.set_xlabel("client" + ("   (* failed)" if failed else ""))
    ax.set_ylabel(f"training traffic ({unit})")
    ax.grid(alpha=0.3, axis="y")
    _legend_above(fig, ax)
    ax.set_xlim(-0.6, n - 0.4)
    return fig


def latency_figure(run: Run) -> Figure | None:
    """Every step's latency (dots) with the p50 and p95 of time bins, in ms."""
    s = run.steps
    if not run.n_steps:
        return None
    t = s["time"].astype(float)
    lat = 1000 * s["latency"].astype(float)
    fig, axes = _figure(8.4, 3.4)
    ax = axes[0][0]
    dots = np.arange(len(t)) if len(t) <= MAX_DOTS else np.sort(
        np.random.default_rng(0).choice(len(t), MAX_DOTS, replace=False))  # a fixed sample: the bins use all
    ax.scatter(t[dots], lat[dots], s=4, color="#9aa7b8", alpha=0.5, lw=0,
               label="one step" if len(dots) == len(t) else f"one step ({MAX_DOTS:,} of {len(t):,} shown)",
               rasterized=True)
    bins = int(min(60, max(4, run.n_steps // 25)))
    edges = np.linspace(t.min(), t.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(t, edges) - 1, 0, bins - 1)
    mids, p50, p95 = [], [], []
    for b in range(bins):
        v = lat[which == b]
        if len(v):
            mids.append((edges[b] + edges[b + 1]) / 2)
            p50.append(np.percentile(v, 50))
            p95.append(np.percentile(v, 95))
    ax.plot(mids, p50, color="#1b5e20", lw=1.8, label="p50")
    ax.plot(mids, p95, color="#b71c1c", lw=1.8, ls="--", label="p95")
    for ch in budget_changes(run)[:1]:
        ax.axvline(ch["time"], color="#888888", ls=":", lw=0.9, label=f"budget {ch['from']} → {ch['to']}")
    ax.set_xlabel("wall time since the run started (s)")
    ax.set_ylabel("step latency (ms)")
    ax.set_ylim(0, float(np.percentile(lat, 99.5)) * 1.15 if len(lat) else 1)
    ax.grid(alpha=0.3)
    _legend_above(fig, ax)
    return fig


def budget_figure(run: Run) -> Figure | None:
    """Budget (channels sent) over time per client; one line when every client that
    finished went through the same changes at the same epochs. A failed client's line
    ends in a cross. None when the whole run had one budget (the summary says which)."""
    s = run.steps
    if not run.n_steps or len(np.unique(s["budget"])) < 2:
        return None
    failed = {int(c) for c in run.failed_clients}
    clients = [int(c) for c in np.unique(s["client"])]
    changes: dict[int, list] = {c: [] for c in clients}
    for ch in budget_changes(run):
        changes[ch["client"]].append((ch["epoch"], ch["from"], ch["to"]))
    ok = [c for c in clients if c not in failed]
    same = len(ok) > 1 and len({tuple(changes[c]) for c in ok}) == 1
    shown = ([ok[0]] if same else ok[:12]) + [c for c in clients if c in failed][:4]
    fig, axes = _figure(8.4, 3.0)
    ax = axes[0][0]
    for c in shown:
        m = s["client"] == c
        t, b = s["time"][m].astype(float), s["budget"][m].astype(int)
        label = f"client {c} (failed)" if c in failed else ("all clients" if same else f"client {c}")
        (line,) = ax.step(t, b, where="post", lw=1.6, label=label,
                         color="#c62828" if c in failed else ("#5e35b1" if same else None))
        if c in failed:
            ax.plot(t[-1:], b[-1:], marker="x", ms=9, mew=2, color=line.get_color(), ls="none")
    ax.set_yscale("log", base=2)
    used = sorted(int(b) for b in np.unique(s["budget"]))
    ax.set_yticks(used, [str(b) for b in used])
    ax.minorticks_off()
    ax.set_ylim(min(used) / 1.5, max(used) * 1.5)
    ax.set_xlabel("wall time since the run started (s)")
    ax.set_ylabel("budget B (channels sent)")
    ax.grid(alpha=0.3)
    _legend_above(fig, ax, ncols=6)
    return fig


def link_figure(run: Run) -> Figure | None:
    """Link capacity over simulated time (median over clients, and the range), up and down."""
    if not run.has_link():
        return None
    s = run.steps
    t = s["sim_time"].astype(float)
    fig, axes = _figure(8.4, 3.4)
    ax = axes[0][0]
    drawn = False
    for col, style in (("link_up_mbps", UP), ("link_down_mbps", DOWN)):
        if col not in s:
            continue
        v = s[col].astype(float)
        ok = np.isfinite(v) & np.isfinite(t)
        if not ok.any():
            continue
        bins = int(min(60, max(4, ok.sum() // 20)))
        edges = np.linspace(t[ok].min(), t[ok].max() + 1e-9, bins + 1)
        which = np.clip(np.digitize(t[ok], edges) - 1, 0, bins - 1)
        mids, med, lo, hi = [], [], [], []
        for b in range(bins):
            w = v[ok][which == b]
            if len(w):
                mids.append((edges[b] + edges[b + 1]) / 2)
                med.append(np.median(w))
                lo.append(w.min())
                hi.append(w.max())
        name = style["label"].split(":")[0]
        ax.plot(mids, med, color=style["color"], ls=style["ls"], lw=1.8, label=f"{name}link (median over clients)")
        ax.fill_between(mids, lo, hi, color=style["color"], alpha=0.15, lw=0, label=f"{name}link (min-max)")
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("link capacity (Mbit/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _legend_above(fig, ax)
    return fig
