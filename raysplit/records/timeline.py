"""Timelines of a run's steps: traffic on the shared channel, samples per source, and
per-source throughput (the Prune-Deprune paper's testbed figures 4-7, as equivalents).

Each comes from a run directory's ``steps.parquet`` on the run's clock: the emulated one
(``sim_time``) when the run had a link, else wall seconds since its start. A message's
bytes count when it has crossed: the activation when its uplink ended
(``sim_time - backward - downlink_s - sim_server_s``), the gradient when its downlink
ended (``sim_time - backward``), with the backward part of ``compute_s`` taken as 2/3 of
it (backward costs twice the forward pass; exact for ``--sim-compute model``).
Throughput skips each source's first step, as the paper's measurement does ("starts
after processing the first batch").
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

BACKWARD_SHARE = 2.0 / 3.0


def read_steps(run_dir: str | Path) -> list[dict]:
    return pq.read_table(Path(run_dir) / "steps.parquet").to_pylist()


def _emulated(rows: Sequence[dict]) -> bool:
    return any(r["sim_time"] == r["sim_time"] for r in rows)


def clock(rows: Sequence[dict]) -> str:
    """The column the timelines use: sim_time (emulated link) or time (wall)."""
    return "sim_time" if _emulated(rows) else "time"


def channel_traffic(rows: Sequence[dict]) -> list[tuple[float, int]]:
    """(time, cumulative wire bytes of every source, up and down) at each message's arrival."""
    events = []
    emulated = _emulated(rows)
    for r in rows:
        if emulated:
            down_at = r["sim_time"] - BACKWARD_SHARE * r["compute_s"]
            up_at = down_at - r["downlink_s"] - r["sim_server_s"]
        else:  # wall clock: the step began latency seconds before its end
            down_at = r["time"] - r["backward_s"]
            up_at = r["time"] - r["latency"] + r["forward_s"]
        events.append((up_at, r["wire_bytes_up"]))
        events.append((down_at, r["wire_bytes_down"]))
    events.sort()
    out, total = [], 0
    for t, b in events:
        total += b
        out.append((t, total))
    return out


def source_samples(rows: Sequence[dict]) -> dict[int, list[tuple[float, int]]]:
    """{source: [(time, cumulative samples)]} at each of its steps' ends."""
    key = clock(rows)
    by: dict[int, list] = {}
    for r in sorted(rows, key=lambda r: (r["client"], r[key])):
        seq = by.setdefault(r["client"], [])
        seq.append((r[key], (seq[-1][1] if seq else 0) + r["samples"]))
    return by


def source_throughput(rows: Sequence[dict]) -> dict[int, float]:
    """{source: samples/s after its first step} on the run's clock."""
    out = {}
    for c, seq in source_samples(rows).items():
        if len(seq) < 2:
            continue
        (t0, n0), (t1, n1) = seq[0], seq[-1]
        out[c] = (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
    return out


def write_parquet(path: str | Path, records: list[dict]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), p)
    return p


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    return plt, fig, ax


def _save(plt, fig, ax, path, *, title: str, xlabel: str, ylabel: str, grid: str = "both") -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis=grid)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_traffic(path: str | Path, runs: dict[str, Sequence[dict]], title: str, xlabel: str) -> Path:
    """Cumulative bytes on the channel over time, one line per run (paper Fig. 4 / 6)."""
    plt, fig, ax = _figure()
    for name, rows in runs.items():
        tl = channel_traffic(rows)
        ax.plot([t for t, _ in tl], [b / 1e6 for _, b in tl], label=name)
    return _save(plt, fig, ax, path, title=title, xlabel=xlabel, ylabel="cumulative MB on the channel")


def plot_samples(path: str | Path, runs: dict[str, Sequence[dict]], title: str, xlabel: str) -> Path:
    """Samples processed per source over time (paper Fig. 5 / 7): one colour per run, one
    line per source."""
    plt, fig, ax = _figure()
    for i, (name, rows) in enumerate(runs.items()):
        for j, (c, seq) in enumerate(sorted(source_samples(rows).items())):
            ax.plot([t for t, _ in seq], [n for _, n in seq], color=f"C{i}", lw=0.9, alpha=0.8,
                    label=name if j == 0 else None)
    return _save(plt, fig, ax, path, title=title, xlabel=xlabel, ylabel="samples processed per source")


def plot_throughput(path: str | Path, runs: dict[str, Sequence[dict]], title: str) -> Path:
    """Samples/s of each source, grouped by run."""
    plt, fig, ax = _figure()
    width = 0.8 / max(len(runs), 1)
    for i, (name, rows) in enumerate(runs.items()):
        tp = source_throughput(rows)
        xs = sorted(tp)
        ax.bar([x + i * width for x in xs], [tp[x] for x in xs], width=width, label=name, color=f"C{i}")
    return _save(plt, fig, ax, path, title=title, xlabel="data source", ylabel="samples/s", grid="y")
