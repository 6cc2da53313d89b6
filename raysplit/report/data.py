"""What the report reads: a run directory as plain numpy columns.

The run directory is the one :mod:`raysplit.records.writer` writes (config.json,
summary.json, steps/evals/epochs.parquet folders). A run that was killed has no
summary.json and may have no epochs yet; everything here copes with that, so a report
can be made of any run directory, finished or not. Only pyarrow and numpy are used
(pandas is a test dependency, not a runtime one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# The edge-emulation columns of StepRow (TEAM contract with the link model). When a run
# has them with non-neutral values the report adds its simulated-time views.
LINK_COLUMNS = ("sim_time", "uplink_s", "downlink_s", "link_up_mbps", "link_down_mbps",
                "wire_bytes_up", "wire_bytes_down", "compute_s")


def _table(path: Path) -> dict[str, np.ndarray]:
    """A Parquet part-file folder as {column: numpy array} (empty dict if absent or empty).
    String columns (run, tenant: one value per run) are left out: turning 10^5 of them into
    Python objects would cost more than everything else the report does."""
    if not path.exists() or not any(path.glob("*.parquet")):
        return {}
    t = pq.read_table(path)
    t = t.select([f.name for f in t.schema if not pa.types.is_string(f.type)])
    return {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}


@dataclass
class Run:
    """One run directory, loaded.

    Args:
        path: the run directory.
        config: config.json (empty if missing).
        summary: summary.json, or None for a run that did not finish.
        steps, evals, epochs: the tables as {column: array}; ``{}`` when there are no rows.
    """

    path: Path
    config: dict
    summary: dict | None
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    evals: dict[str, np.ndarray] = field(default_factory=dict)
    epochs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.steps.get("client", ()))

    @property
    def n_epochs(self) -> int:
        return len(self.epochs.get("epoch", ()))

    @property
    def failed_clients(self) -> dict[str, str]:
        return dict((self.summary or {}).get("failed_clients") or {})

    @property
    def clients(self) -> list[int]:
        ids = set(self.steps.get("client", np.array([], dtype=int)).tolist())
        ids |= set(self.evals.get("client", np.array([], dtype=int)).tolist())
        ids |= {int(c) for c in self.failed_clients}
        return sorted(int(c) for c in ids)

    def has_link(self) -> bool:
        """True when the steps carry edge-emulation columns with real (non-neutral) values:
        some transfer took simulated time or some link had a finite, positive capacity."""
        s = self.steps
        if not self.n_steps or "sim_time" not in s:
            return False
        for col in ("uplink_s", "downlink_s"):
            if col in s and np.any(np.nan_to_num(s[col].astype(float)) > 0):
                return True
        for col in ("link_up_mbps", "link_down_mbps"):
            if col in s:
                v = s[col].astype(float)
                if np.any(np.isfinite(v) & (v > 0)):
                    return True
        return False


def load_run(path: str | Path) -> Run:
    """Read a run directory. Raises FileNotFoundError naming the path if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    markers = ("config.json", "summary.json", "steps.parquet")
    if not any((path / m).exists() for m in markers):
        raise FileNotFoundError(
            f"{str(path)!r} is not a raysplit run directory (none of {', '.join(markers)} in it)")
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else None
    run = Run(path, config, summary, _table(path / "steps.parquet"), _table(path / "evals.parquet"),
              _table(path / "epochs.parquet"))
    if run.n_steps:  # part files are written as they arrive; the report reads them in time order
        order = np.argsort(run.steps["time"], kind="stable")
        run.steps = {k: v[order] for k, v in run.steps.items()}
    if run.n_epochs:
        order = np.argsort(run.epochs["epoch"], kind="stable")
        run.epochs = {k: v[order] for k, v in run.epochs.items()}
    return run


def percentiles(values: np.ndarray, qs=(50, 90, 95, 99)) -> list[float]:
    """The ``qs`` percentiles and the maximum of ``values`` (NaN where there are none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return [math.nan] * (len(qs) + 1)
    return [float(x) for x in np.percentile(v, qs)] + [float(v.max())]


def budget_changes(run: Run) -> list[dict]:
    """Where each client's budget changed, from its steps: client, time (s since the run
    started), epoch (0-based), from and to. The steps are the record of what was really
    sent; they give a time, which the summary's transitions do not."""
    s = run.steps
    out = []
    if not run.n_steps:
        return out
    for c in np.unique(s["client"]):
        idx = np.flatnonzero(s["client"] == c)
        b = s["budget"][idx]
        for j in np.flatnonzero(b[1:] != b[:-1]) + 1:
            i = idx[j]
            out.append({"client": int(c), "time": float(s["time"][i]), "epoch": int(s["epoch"][i]),
                        "from": int(b[j - 1]), "to": int(b[j])})
    out.sort(key=lambda r: (r["time"], r["client"]))
    return out


def epoch_sim_time(run: Run) -> np.ndarray:
    """The simulated clock at the end of each epoch: the latest ``sim_time`` of its steps."""
    s = run.steps
    out = np.full(run.n_epochs, np.nan)
    for i, e in enumerate(run.epochs.get("epoch", ())):
        m = s["epoch"] == e
        if m.any():
            out[i] = float(np.nanmax(s["sim_time"][m].astype(float)))
    return out
