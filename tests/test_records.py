"""The run writer and plots, without a run: rows in, files and epoch rows out."""

import dataclasses
import io

import pyarrow.parquet as pq
import pytest

from raysplit.config import SplitConfig
from raysplit.observability.callbacks import Callback, ProgressBar
from raysplit.records.plots import plot_accuracy, plot_bytes
from raysplit.records.rows import EpochRow, EvalRow, StepRow
from raysplit.records.writer import RunWriter


def step(client, epoch, batch, samples=4, up=100, down=90, loss=1.0, t=0.0):
    # a client's step numbers grow across epochs (the writer keeps each step once)
    return StepRow(run="r", tenant="t", client=client, shard=0, epoch=epoch, batch=batch, step=100 * epoch + batch + 1,
                   phase=0,
                   budget=4, lr=0.1, samples=samples, bytes_up=up, bytes_down=down, loss=loss, prune_loss=0.0,
                   correct=1, time=t, latency=0.01, forward_s=0.002, exchange_s=0.006, queue_s=0.0,
                   server_s=0.005, backward_s=0.002, merged=1)


def ev(client, epoch, correct=3, total=4):
    return EvalRow(run="r", tenant="t", client=client, epoch=epoch, phase=0, budget=4, lr=0.1, correct=correct,
                   total=total, bytes_up=10, seconds=0.1, time=float(epoch))


class Collect(Callback):
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_steps(self, rows):
        self.steps.extend(rows)

    def on_epoch(self, row):
        self.epochs.append(row)


def writer(tmp_path, clients=(0, 1), **kw):
    return RunWriter(tmp_path / "run", config={}, clients=list(clients), split=SplitConfig(), method="fixed", **kw)


def test_an_evaluation_closes_its_epoch_only_after_the_steps_before_it(tmp_path):
    cb = Collect()
    w = writer(tmp_path, callbacks=[cb])
    # one hand-over with steps and evaluations interleaved, as the record buffer gives them
    w.put([step(0, 0, 0), step(1, 0, 0), step(0, 0, 1), ev(0, 0), step(1, 0, 1, loss=3.0), ev(1, 0)])
    (row,) = cb.epochs
    assert (row.epoch, row.samples, row.steps, row.clients) == (0, 16, 4, 2)
    assert row.train_loss == pytest.approx((1 + 1 + 1 + 3) / 4)
    assert row.test_accuracy == pytest.approx(6 / 8) and row.bytes_up == 400 and row.eval_bytes_up == 20
    assert len(cb.steps) == 4


def test_an_epoch_waits_for_every_live_client_and_a_failure_releases_it(tmp_path):
    cb = Collect()
    w = writer(tmp_path, callbacks=[cb])
    w.put([step(0, 0, 0), step(1, 0, 0), ev(0, 0)])
    assert cb.epochs == []  # client 1 has not evaluated epoch 0 yet
    w.put([ev(1, 0), step(0, 1, 0), ev(0, 1)])
    assert [r.epoch for r in cb.epochs] == [0]
    w.client_failed(1, "boom")
    assert [(r.epoch, r.clients, r.samples) for r in cb.epochs] == [(0, 2, 8), (1, 1, 4)]


def test_tables_are_readable_while_the_run_goes_on(tmp_path):
    w = writer(tmp_path, clients=(0,), flush_seconds=0.0)
    w.put([step(0, 0, b) for b in range(3)])
    w.put([ev(0, 0)])
    # no close(): a killed run leaves whole part files
    steps = pq.read_table(tmp_path / "run" / "steps.parquet").to_pandas()
    assert list(steps.columns) == [f.name for f in dataclasses.fields(StepRow)] and len(steps) == 3
    epochs = pq.read_table(tmp_path / "run" / "epochs.parquet").to_pandas()
    assert epochs["samples"].tolist() == [12]
    assert not list((tmp_path / "run" / "steps.parquet").glob("*.tmp"))


def test_progress_bar_moves_per_step():
    bar = ProgressBar(total_steps=10, file=io.StringIO())
    bar.on_steps([step(0, 0, 0)])
    assert bar.bar.n == 1
    bar.on_steps([step(0, 0, 1), step(1, 0, 1)])
    assert bar.bar.n == 3


def epoch_row(e, budget, acc):
    return EpochRow(epoch=e, phase=0, budget=budget, lr=0.1, train_loss=1.0, test_accuracy=acc, bytes_up=1,
                    bytes_down=1, eval_bytes_up=0, samples=1, steps=1, clients=1, time=float(e))


def test_accuracy_plot_has_integer_epoch_ticks(tmp_path):
    ax = plot_accuracy(tmp_path / "a.png", [epoch_row(0, 4, 0.5), epoch_row(1, 4, 0.6), epoch_row(2, 128, 0.7)])
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert (tmp_path / "a.png").stat().st_size > 0


def test_bytes_plot_shows_up_and_down_apart(tmp_path):
    rows = [step(0, 0, b, up=1000, down=990, t=float(b)) for b in range(5)]
    up_ax, down_ax = plot_bytes(tmp_path / "b.png", rows)
    assert up_ax is not down_ax  # two panels: nearly equal curves cannot hide each other
    (up_line,), (down_line,) = up_ax.get_lines(), down_ax.get_lines()
    assert up_line.get_ydata()[-1] == pytest.approx(5000 / 1e6)
    assert down_line.get_ydata()[-1] == pytest.approx(4950 / 1e6)
