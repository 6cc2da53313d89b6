"""The run report (raysplit.report): made at the end of every run, self-contained, readable.

A real local run (digits, seconds) checks the page against the run's own files; small
run directories written through the run writer check the failed-client, edge-link and
unfinished-run cases; the figures are checked for what a reader needs (integer epochs,
units on every axis, up and down told apart, no text printed over text).
"""

from __future__ import annotations

import base64
import html.parser
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysplit import local
from raysplit.config import SplitConfig
from raysplit.records.rows import EpochRow, EvalRow, StepRow, Summary
from raysplit.records.writer import RunWriter
from raysplit.report import build_report, figures, load_run, write_report

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "6",
          "--test-subset", "96", "--threads", "1", "--no-progress"]


class Page(html.parser.HTMLParser):
    """What a browser would need to fetch, and the tables and images, of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.images: list[dict] = []
        self.tables = 0
        self.sections: list[str] = []
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag == "table":
            self.tables += 1
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("data:", "#")):
                self.refs.append(a[key])


def pngs(page: Page) -> list[bytes]:
    out = []
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        out.append(base64.b64decode(data))
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "deprune"
    local.main(COMMON + ["--method", "deprune", "--budgets", "4,128", "--epochs-per-budget", "2,1", "--out", str(out)])
    return out


def test_every_run_gets_a_self_contained_report(local_run):
    path = local_run / "report.html"
    assert path.exists(), "the run writer did not write report.html"
    text = path.read_text()
    page = Page(text)
    assert page.refs == [] and page.scripts == 0  # nothing to fetch, nothing to run
    assert not re.search(r"url\(|@import|https?://", text)
    assert page.sections == ["summary", "accuracy", "traffic", "latency", "budget", "failures", "config"]
    imgs = pngs(page)
    assert len(imgs) == 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in imgs)
    assert all(img.get("alt") for img in page.images)
    s = json.loads((local_run / "summary.json").read_text())
    assert s["run"] in text and f"{100 * s['final_test_accuracy']:.2f} %" in text
    epochs = pq.read_table(local_run / "epochs.parquet").num_rows
    assert epochs == 3 and text.count("<tr") >= epochs
    assert "4 → 128" in text  # the budget transition
    assert "None: every client finished." in text
    assert "Edge link" not in text  # no link columns: that part is left out
    cfg = json.loads((local_run / "config.json").read_text())
    assert f"<th>split.model</th><td>{cfg['split']['model']}</td>" in text


def test_report_command_rewrites_it_and_says_where(local_run, tmp_path):
    out = tmp_path / "copy.html"
    r = subprocess.run([sys.executable, "-m", "raysplit.report", str(local_run), "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and out.stat().st_size > 20_000
    r = subprocess.run([sys.executable, "-m", "raysplit.report", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "run directory" in r.stderr and "nope" in r.stderr and "does not exist" in r.stderr
    r = subprocess.run([sys.executable, "-m", "raysplit.report", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "is not a raysplit run directory" in r.stderr


def test_report_is_cheap(local_run):
    t = time.perf_counter()
    write_report(local_run)
    assert time.perf_counter() - t < 10  # generous bound; the README states the measured figure


# --------------------------------------------------------------------------- hand-made runs


def step(client, epoch, batch, *, budget=4, t=0.0, up=1000, down=990, latency=0.02):
    # a client's step numbers grow across epochs (the run writer keeps each step once)
    return StepRow(run="r1", tenant="t", client=client, shard=0, epoch=epoch, batch=batch, step=100 * epoch + batch + 1,
                   phase=0 if budget == 4 else 1, budget=budget, lr=0.1, samples=8, bytes_up=up, bytes_down=down,
                   loss=1.0, prune_loss=0.0, correct=4, time=t, latency=latency, forward_s=latency / 4,
                   exchange_s=latency / 2, queue_s=0.0, server_s=latency / 3, backward_s=latency / 4, merged=1)


def ev(client, epoch, budget, correct=6):
    return EvalRow(run="r1", tenant="t", client=client, epoch=epoch, phase=0, budget=budget, lr=0.1,
                   correct=correct, total=8, bytes_up=10, seconds=0.1, time=10.0 * (epoch + 1))


def summary(**kw):
    base = dict(run="r1", tenant="t", method="deprune", dataset="digits", model="vgg_small", split_layer=4,
                budgets=[4, 128], epochs_per_budget=[2, 1], codec="float32", final_test_accuracy=0.75,
                bytes_up=0, bytes_down=0, samples=0, steps=0, wall_seconds=30.0, startup_seconds=2.0,
                train_seconds=28.0, train_samples=100, test_samples=24, epochs=3, clients=3, shards=1,
                mode="independent", policy="sync")
    base.update(kw)
    return Summary(**base)


def hand_made_run(tmp_path, *, fail: int | None = None, finish: bool = True) -> Path:
    out = tmp_path / "run"
    w = RunWriter(out, config={"clients": 3, "train": {"method": "deprune"}}, clients=[0, 1, 2],
                  split=SplitConfig(), method="deprune", flush_seconds=0.0)
    t = 1.0
    for e, budget in ((0, 4), (1, 4), (2, 128)):
        for c in (0, 1, 2):
            if fail == c and e >= 1:
                continue
            w.put([step(c, e, b, budget=budget, t=t + 0.1 * b + 0.01 * c, up=1000 * budget // 4,
                        down=990 * budget // 4, latency=0.02 + 0.01 * c) for b in range(6)])
            w.put([ev(c, e, budget)])
        if fail is not None and e == 0:
            w.client_failed(fail, "InjectedFault: client 1: injected fault at epoch 1")
        t += 10
    if finish:
        failed = {str(fail): "InjectedFault: client 1: injected fault at epoch 1"} if fail is not None else {}
        w.close(summary(failed_clients=failed, transitions=[dict(epoch=2, from_budget=4, to_budget=128, lr=0.1)]))
    else:
        w.flush()
    return out


def test_failed_clients_are_shown(tmp_path):
    out = hand_made_run(tmp_path, fail=1)
    text = (out / "report.html").read_text()
    assert "1 client failed" in text
    failures = text[text.index('<section id="failures">'):text.index('<section id="config">')]
    assert "InjectedFault: client 1: injected fault at epoch 1" in failures
    assert '<tr class="bad"><td class="n">1</td><td class="n">6</td><td class="">epoch 1' in failures
    assert "failed: InjectedFault" in text  # and in the per-client table


def test_an_unfinished_run_gets_a_report_of_what_it_has(tmp_path):
    out = hand_made_run(tmp_path, finish=False)
    assert not (out / "summary.json").exists()
    text = write_report(out).read_text()
    assert "not finished" in text and "Failed clients" not in text
    assert len(pngs(Page(text))) == 5


def test_an_empty_run_directory_reports_that_nothing_ran(tmp_path):
    out = tmp_path / "run"
    RunWriter(out, config={"x": 1}, clients=[0], split=SplitConfig(), method="fixed")
    text = write_report(out).read_text()
    assert "No epoch finished yet" in text and "No training step was recorded" in text
    assert Page(text).images == []


def with_link_columns(out: Path) -> None:
    """Add the edge-emulation StepRow columns (TEAM contract) to a run's steps, with a
    link whose capacity falls over simulated time."""
    t = pq.read_table(out / "steps.parquet")
    n = t.num_rows
    rng = np.random.default_rng(0)
    sim = np.cumsum(np.full(n, 0.5))
    cols = {"compute_s": np.full(n, 0.01), "uplink_s": 0.2 + rng.random(n) * 0.1,
            "downlink_s": 0.05 + rng.random(n) * 0.01, "sim_time": sim,
            "link_up_mbps": np.linspace(8.0, 2.0, n), "link_down_mbps": np.linspace(40.0, 20.0, n),
            "wire_bytes_up": t.column("bytes_up").to_numpy() + 52, "wire_bytes_down": t.column("bytes_down").to_numpy() + 52}
    for k, v in cols.items():  # StepRow has them (neutral values without a link): replace them
        if k in t.column_names:
            t = t.set_column(t.column_names.index(k), k, pa.array(v, type=t.schema.field(k).type))
        else:
            t = t.append_column(k, pa.array(v))
    import shutil

    shutil.rmtree(out / "steps.parquet")
    (out / "steps.parquet").mkdir()
    pq.write_table(t, out / "steps.parquet" / "part-00000.parquet")
    s = json.loads((out / "summary.json").read_text())
    s.update(sim_seconds=float(sim[-1]), time_to_accuracy={"0.7": 12.5})
    (out / "summary.json").write_text(json.dumps(s))


def test_edge_link_columns_add_the_simulated_time_views(tmp_path):
    out = hand_made_run(tmp_path)
    run = load_run(out)
    assert not run.has_link()
    with_link_columns(out)
    run = load_run(out)
    assert run.has_link()
    text = build_report(run)
    assert "Edge link (emulated)" in text and "uplink transfer (simulated)" in text
    assert "simulated time (s)" in text and "time to accuracy (simulated)" in text and "0.7: 12.5 s" in text
    assert "wire bytes up / payload" in text
    assert len(pngs(Page(text))) == 6
    fig = figures.accuracy_figure(run)
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "wall time since the run started (s)",
                                                    "simulated time (s)"]


def test_neutral_link_columns_are_left_out(tmp_path):
    """Link columns with neutral values (no link configured) do not add a link section."""
    out = hand_made_run(tmp_path)
    with_link_columns(out)
    t = pq.read_table(out / "steps.parquet")
    n = t.num_rows
    for col, val in (("uplink_s", 0.0), ("downlink_s", 0.0), ("link_up_mbps", float("inf")),
                     ("link_down_mbps", float("inf"))):
        t = t.set_column(t.column_names.index(col), col, pa.array(np.full(n, val)))
    pq.write_table(t, out / "steps.parquet" / "part-00000.parquet")
    assert not load_run(out).has_link()
    assert "Edge link" not in build_report(load_run(out))


# --------------------------------------------------------------------------- readable figures


def drawn_texts(fig):
    """Every text a reader sees: tick labels inside the view, axis labels, titles, texts
    in the panels and the legends' entries."""
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
                if lo - 1e-9 <= loc <= hi + 1e-9:
                    yield label
        yield from (ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, *ax.texts)
        if ax.get_legend():
            yield from ax.get_legend().get_texts()
    for leg in fig.legends:
        yield from leg.get_texts()


def texts_overlap(fig) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of a drawn figure whose boxes intersect."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(r).shrunk(0.97, 0.9)) for t in drawn_texts(fig)
             if t.get_visible() and t.get_text().strip()]
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:] if x.overlaps(y)]


@pytest.mark.parametrize("kind", ["hand", "link", "failed"])
def test_figures_are_readable(tmp_path, kind):
    out = hand_made_run(tmp_path, fail=1 if kind == "failed" else None)
    if kind == "link":
        with_link_columns(out)
    run = load_run(out)
    made = {name: getattr(figures, name)(run) for name in
            ("accuracy_figure", "traffic_figure", "clients_figure", "latency_figure", "budget_figure", "link_figure")}
    assert (made["link_figure"] is not None) == (kind == "link")
    for name, fig in made.items():
        if fig is None:
            continue
        assert texts_overlap(fig) == [], name
        for ax in fig.axes:
            if ax.get_ylabel():
                assert re.search(r"\((%|s|ms|B|KiB|MiB|GiB|Mbit/s|channels sent)\)|cumulative (B|KiB|MiB|GiB)",
                                 ax.get_ylabel()), (name, ax.get_ylabel())
    for name in ("accuracy_figure", "latency_figure", "budget_figure", "clients_figure"):
        assert all(ax.get_xlabel() and ax.get_ylabel() for ax in made[name].axes[:1]), name
    assert made["traffic_figure"].axes[-1].get_xlabel() == "wall time since the run started (s)"
    acc = made["accuracy_figure"].axes[0]
    ticks = [t for t in acc.get_xticks() if acc.get_xlim()[0] <= t <= acc.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() and t >= 1 for t in ticks)
    labels = [t.get_text() for t in acc.texts]
    assert labels == ["B=4", "B=128"]
    up_ax, down_ax = made["traffic_figure"].axes
    (up,), (down,) = up_ax.get_lines()[:1], down_ax.get_lines()[:1]
    assert up.get_color() != down.get_color() and up.get_linestyle() != down.get_linestyle()
    bars_up, bars_down = made["clients_figure"].axes[0].containers
    assert bars_up[0].get_hatch() != bars_down[0].get_hatch()


def test_byte_units_keep_numbers_short():
    assert figures.byte_unit(500) == (1.0, "B")
    assert figures.byte_unit(5 * 1024**2) == (1024.0**2, "MiB")
    assert figures.byte_unit(7 * 1024**4) == (1024.0**3, "GiB")
