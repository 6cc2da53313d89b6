"""The run directory, written as the run goes.

::

    config.json          the resolved configuration, written first
    steps.parquet/       StepRow parts   } each flush adds a complete part file, so a run
    evals.parquet/       EvalRow parts   } that is killed leaves every row flushed so far
    epochs.parquet/      EpochRow parts  } readable (pyarrow/pandas read the folder as one table)
    models/budget_<B>.pt one loadable model per budget (methods that save them)
    checkpoints/epoch_<e>/state.pt   full state every --checkpoint-every epochs
    summary.json, accuracy.png, bytes.png   at the end
    accuracy_time.png, bytes_clients.png   with an emulated link: accuracy vs the emulated
                         clock, and each client's cumulative bytes vs time
    report.html          the run report (raysplit.report), last

The same writer serves the local trainer (called directly) and the cluster (the driver
feeds it what the actors put into the record buffer), so their outputs compare column by
column. An epoch row is made once every live client has evaluated that epoch.

Each step is recorded once: a client's step numbers only grow, and a row at or below the
last step recorded for its client (a restarted client replaying steps whose rows were
already written) is dropped and counted in ``duplicates``; an evaluation is recorded
once per client and epoch. Other items (failures, restarts, skipped steps) are kept in
``events`` and handed to the callbacks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow.parquet as pq

from raysplit.budget.policies import Round, Transition
from raysplit.observability.callbacks import Callback
from raysplit.records.rows import EpochRow, EvalRow, StepRow, to_table

TABLES = ("steps.parquet", "evals.parquet", "epochs.parquet")


def write_run_report(out: Path) -> None:
    """report.html from what is on disk; a report that cannot be made is said on stderr
    and never costs the run its results."""
    from raysplit.report import write_report

    try:
        write_report(out)
    except Exception as e:  # noqa: BLE001 - the run's files are written; say what went wrong
        print(f"[raysplit] report.html not written for {out}: {type(e).__name__}: {e}", file=sys.stderr)


@dataclass(frozen=True)
class ModelSnapshot:
    """A trained model at the end of a phase: every client's head and one server half.

    Args:
        phase, budget, epoch: where in the plan it was taken.
        heads: {client: modules state (numpy)}.
        server: the server half's modules state (numpy; replicas are equal after a sync).
    """

    phase: int
    budget: int
    epoch: int
    heads: dict
    server: dict


@dataclass(frozen=True)
class CheckpointSnapshot:
    """Everything needed to continue after ``epoch``: clients' and shards' full states and
    the scheduler's."""

    epoch: int
    clients: dict
    shards: list
    scheduler: dict


class PartTable:
    """A Parquet table kept as numbered part files in a folder ``<name>.parquet``."""

    def __init__(self, path: Path, row_type: type) -> None:
        self.path, self.row_type = path, row_type
        path.mkdir(parents=True, exist_ok=True)
        self.parts = 0
        self.pending: list = []

    def append(self, rows: Iterable) -> None:
        self.pending.extend(rows)

    def flush(self) -> None:
        if not self.pending:
            return
        tmp = self.path / f".part-{self.parts:05d}.tmp"
        pq.write_table(to_table(self.pending, self.row_type), tmp)
        os.replace(tmp, self.path / f"part-{self.parts:05d}.parquet")  # a part appears whole or not at all
        self.parts += 1
        self.pending = []


class RunWriter:
    """Args:
    out: the run directory (tables of an earlier run there are replaced).
    config: the resolved configuration, for config.json.
    clients: the client ids expected to train and evaluate.
    split: the network's configuration (saved with every model).
    method: the method's name (saved with every model).
    callbacks: observers of rows, epochs and events (progress bars, benchmarks).
    flush_seconds: write pending step rows at least this often.
    resume: a resumed run (``runtime/resume.py``): models and checkpoints already written
        stay; the caller hands the kept rows back in with ``put``.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        config: dict,
        clients: Sequence[int],
        split,
        method: str,
        callbacks: Sequence[Callback] = (),
        flush_seconds: float = 2.0,
        resume: bool = False,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in (*TABLES, *(() if resume else ("models", "checkpoints"))):
            shutil.rmtree(self.out / name, ignore_errors=True)
        for name in ("summary.json", "accuracy.png", "bytes.png", "accuracy_time.png", "bytes_clients.png",
                     "report.html"):
            (self.out / name).unlink(missing_ok=True)
        (self.out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        self.split, self.method = split, method
        self.steps = PartTable(self.out / "steps.parquet", StepRow)
        self.evals = PartTable(self.out / "evals.parquet", EvalRow)
        self.epochs = PartTable(self.out / "epochs.parquet", EpochRow)
        self.live = set(clients)
        self.rounds: dict[int, set[int]] = {}  # epoch -> its participants (participant selection)
        self.callbacks = list(callbacks)
        self.flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        # per epoch: training sums and evaluations by client
        self._train: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._clients: dict[int, set[int]] = defaultdict(set)
        self._evals: dict[int, dict[int, EvalRow]] = defaultdict(dict)
        self.next_epoch = 0
        self.epoch_rows: list[EpochRow] = []
        self.step_points: list[StepRow] = []  # for bytes.png
        self.transitions: list[dict] = []
        self.models: list[str] = []
        self.checkpoints: list[str] = []
        if resume:
            from raysplit.runtime.resume import saved_files

            self.models = saved_files(self.out, "models", "budget_*.pt")
            self.checkpoints = saved_files(self.out, "checkpoints", "epoch_*")
        self.failed: dict[int, str] = {}
        self.totals = {"bytes_up": 0, "bytes_down": 0, "samples": 0, "steps": 0}
        self.sim_end = math.nan  # the latest emulated clock of any step
        self.last_step: dict[int, int] = {}  # client -> last step recorded
        self.duplicates = 0
        self.events: list = []

    # -- input ------------------------------------------------------------------
    def put(self, items: Iterable[Any]) -> None:
        """Rows, events and snapshots, in any mix (what the record buffer hands over)."""
        # In arrival order: an evaluation closes its epoch only after that epoch's steps
        # (runs of step rows are handed on together).
        steps: list[StepRow] = []
        for item in items:
            if isinstance(item, StepRow):
                steps.append(item)
                continue
            if steps:
                self._steps(steps)
                steps = []
            if isinstance(item, EvalRow):
                self._eval(item)
            elif isinstance(item, Round):
                self.rounds[item.epoch] = set(item.clients)
                for cb in self.callbacks:
                    cb.on_event(item)
                self._complete_epochs()
            elif isinstance(item, Transition):
                if any(t["epoch"] == item.epoch and t["client"] == item.client for t in self.transitions):
                    continue  # announced again by a scheduler that restarted
                self.transitions.append({**item.__dict__, "time": time.time()})
                for cb in self.callbacks:
                    cb.on_event(item)
            elif isinstance(item, ModelSnapshot):
                self._save_model(item)
            elif isinstance(item, CheckpointSnapshot):
                self._save_checkpoint(item)
            else:
                self.events.append(item)
                for cb in self.callbacks:
                    cb.on_event(item)
        if steps:
            self._steps(steps)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _steps(self, rows: list[StepRow]) -> None:
        fresh = []
        for r in rows:
            if r.step <= self.last_step.get(r.client, 0):
                self.duplicates += 1
                continue
            self.last_step[r.client] = r.step
            fresh.append(r)
        if not fresh:
            return
        rows = fresh
        self.steps.append(rows)
        self.step_points.extend(rows)
        for r in rows:
            acc = self._train[r.epoch]
            acc["samples"] += r.samples
            acc["loss"] += r.loss * r.samples
            acc["bytes_up"] += r.bytes_up
            acc["bytes_down"] += r.bytes_down
            acc["steps"] += 1
            if r.sim_time == r.sim_time:  # emulated link: the epoch ends at its latest clock
                acc["sim_time"] = max(acc.get("sim_time", -math.inf), r.sim_time)
                self.sim_end = r.sim_time if self.sim_end != self.sim_end else max(self.sim_end, r.sim_time)
            self._clients[r.epoch].add(r.client)
            self.totals["bytes_up"] += r.bytes_up
            self.totals["bytes_down"] += r.bytes_down
            self.totals["samples"] += r.samples
            self.totals["steps"] += 1
        for cb in self.callbacks:
            cb.on_steps(rows)

    def _eval(self, row: EvalRow) -> None:
        if row.client in self._evals.get(row.epoch, {}) or row.epoch < self.next_epoch:
            self.duplicates += 1  # an evaluation done again by a client that restarted
            return
        self.evals.append([row])
        self._evals[row.epoch][row.client] = row
        self._complete_epochs()

    def client_failed(self, client: int, error: str) -> None:
        """A failed client no longer holds back the rows of the epochs it will not finish."""
        self.failed[client] = error
        self.live.discard(client)
        self._complete_epochs()

    def _complete_epochs(self, force: bool = False) -> None:
        while True:
            e = self.next_epoch
            evals = self._evals.get(e, {})
            expected = self.live & self.rounds[e] if e in self.rounds else self.live
            if e in self.rounds and not expected and not evals:  # nobody took part: no row
                self.next_epoch += 1
                continue
            if not evals or (not force and not expected <= set(evals)):
                return
            self._emit_epoch(e, list(evals.values()))
            self.next_epoch += 1

    def _emit_epoch(self, epoch: int, evals: list[EvalRow]) -> None:
        acc = self._train.pop(epoch, {})
        n = int(acc.get("samples", 0))
        total = sum(r.total for r in evals)
        first = evals[0]
        row = EpochRow(
            epoch=epoch,
            phase=first.phase,
            budget=first.budget,
            lr=first.lr,
            train_loss=acc.get("loss", 0.0) / n if n else math.nan,
            test_accuracy=sum(r.correct for r in evals) / total if total else math.nan,
            bytes_up=int(acc.get("bytes_up", 0)),
            bytes_down=int(acc.get("bytes_down", 0)),
            eval_bytes_up=sum(r.bytes_up for r in evals),
            samples=n,
            steps=int(acc.get("steps", 0)),
            clients=len(self._clients.pop(epoch, set())),
            time=max(r.time for r in evals),
            sim_time=float(acc.get("sim_time", math.nan)),
        )
        del self._evals[epoch]
        self.epoch_rows.append(row)
        self.epochs.append([row])
        self.flush()
        for cb in self.callbacks:
            cb.on_epoch(row)

    # -- what the summary reads ----------------------------------------------------
    @property
    def sim_seconds(self) -> float | None:
        """The emulated clock at the end of training (None without a link)."""
        return None if self.sim_end != self.sim_end else float(self.sim_end)

    def time_to_accuracy(self, target: float | None) -> float | None:
        """When the test accuracy first reached ``target``: the epoch's emulated clock with
        a link, else its wall time since the start (None: no target, or never reached)."""
        if target is None:
            return None
        for e in self.epoch_rows:
            if e.test_accuracy >= target:
                return float(e.sim_time if e.sim_time == e.sim_time else e.time)
        return None

    # -- files ------------------------------------------------------------------
    def _save_model(self, snap: ModelSnapshot) -> None:
        from raysplit.inference import save_model

        path = self.out / "models" / f"budget_{snap.budget}.pt"
        save_model(path, split=self.split, method=self.method, snapshot=snap)
        if str(path.relative_to(self.out)) not in self.models:  # saved again by a restart or a resume
            self.models.append(str(path.relative_to(self.out)))

    def _save_checkpoint(self, snap: CheckpointSnapshot) -> None:
        from raysplit.runtime.checkpoint import save_checkpoint

        path = save_checkpoint(self.out / "checkpoints" / f"epoch_{snap.epoch}", snap)
        if str(path.relative_to(self.out)) not in self.checkpoints:
            self.checkpoints.append(str(path.relative_to(self.out)))

    def flush(self) -> None:
        for t in (self.steps, self.evals, self.epochs):
            t.flush()
        self._last_flush = time.monotonic()

    def close(self, summary) -> None:
        """Flush what is left (epochs a failure left incomplete included), write
        summary.json, the plots and report.html."""
        self._complete_epochs(force=True)
        self.flush()
        (self.out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")
        from raysplit.records.plots import plot_run

        plot_run(self.out, self.epoch_rows, self.step_points)
        write_run_report(self.out)
        for cb in self.callbacks:
            cb.on_run_end(summary)
