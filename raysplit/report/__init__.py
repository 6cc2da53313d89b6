"""The run report: one self-contained ``report.html`` per run directory.

    python -m raysplit.report RUN_DIR        # any run directory, finished or not

Every job gets it at the end without doing anything: the run writer
(:meth:`raysplit.records.writer.RunWriter.close`) calls :func:`write_report`. It holds
the summary and the configuration, accuracy against epoch and time, traffic over time (up
and down apart) and per client, step-latency percentiles, budget transitions, failed
clients, and, when the steps carry the edge-emulation columns, the simulated-time views.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from raysplit.records.summary import human_bytes
from raysplit.report import figures
from raysplit.report.data import Run, budget_changes, epoch_sim_time, load_run, percentiles
from raysplit.report.html import esc, fmt, image, key_values, page, table

__all__ = ["REPORT_NAME", "build_report", "load_run", "write_report"]

REPORT_NAME = "report.html"
QS = (50, 90, 95, 99)
# StepRow timing columns, in the order a step spends them (plus the edge link's when present).
PHASES = (("latency", "whole step"), ("forward_s", "client forward + encode"),
          ("exchange_s", "exchange (incl. server)"), ("queue_s", "  of which queue at shard"),
          ("server_s", "  of which server step"), ("backward_s", "client decode + backward"),
          ("compute_s", "client compute (link model)"), ("uplink_s", "uplink transfer (simulated)"),
          ("downlink_s", "downlink transfer (simulated)"))


def _summary_section(run: Run) -> str:
    s, e = run.summary or {}, run.epochs
    pairs: list[tuple[str, object]] = [("run", s.get("run") or run.config.get("train", run.config).get("run_id"))]
    pairs.append(("tenant", s.get("tenant")))
    if s:
        pairs += [("method", s["method"]),
                  ("data / model", f"{s['dataset']} / {s['model']} (split after layer {s['split_layer']})"),
                  ("budgets × epochs", f"{s['budgets']} × {s['epochs_per_budget']}"), ("codec", s["codec"])]
        if s.get("clients") is not None:
            procs = s.get("client_actors")
            pairs += [("clients", f"{s['clients']}" + (f" in {procs} actor processes" if procs else "")),
                      ("shards", s.get("shards")), ("mode / policy", f"{s.get('mode')} / {s.get('policy')}")]
        pairs.append(("final test accuracy", f"{100 * s['final_test_accuracy']:.2f} %"
                      if isinstance(s["final_test_accuracy"], (int, float)) and math.isfinite(s["final_test_accuracy"])
                      else "-"))
    if run.n_epochs:
        acc = e["test_accuracy"].astype(float)
        if np.isfinite(acc).any():
            i = int(np.nanargmax(acc))
            pairs.append(("best test accuracy", f"{100 * acc[i]:.2f} % (epoch {int(e['epoch'][i]) + 1})"))
    up = int(s.get("bytes_up", run.steps["bytes_up"].sum() if run.n_steps else 0))
    down = int(s.get("bytes_down", run.steps["bytes_down"].sum() if run.n_steps else 0))
    samples = int(s.get("samples", run.steps["samples"].sum() if run.n_steps else 0))
    pairs += [("training bytes up / down", f"{human_bytes(up)} / {human_bytes(down)}"),
              ("bytes up per sample", f"{up / samples:,.0f} B" if samples else "-"),
              ("samples / steps / epochs", f"{samples:,} / {int(s.get('steps', run.n_steps)):,} / "
                                           f"{int(s.get('epochs', run.n_epochs))}")]
    if s:
        pairs += [("wall time", f"{s['wall_seconds']:.1f} s (start-up {s['startup_seconds']:.1f} s, "
                                f"training {s['train_seconds']:.1f} s)"),
                  ("samples/s (training)", f"{s['samples'] / max(s['train_seconds'], 1e-9):,.1f}")]
        for key, label in (("sim_seconds", "simulated time"), ("time_to_accuracy", "time to accuracy (simulated)")):
            if s.get(key) is not None:
                v = s[key]
                pairs.append((label, ", ".join(f"{k}: {fmt(x)} s" for k, x in v.items()) if isinstance(v, dict)
                              else f"{fmt(v)} s"))
        if s.get("models"):
            pairs.append(("models", ", ".join(s["models"])))
        if s.get("checkpoints"):
            pairs.append(("checkpoints", ", ".join(s["checkpoints"])))
    failed = run.failed_clients
    status = ("finished" if s else "not finished (no summary.json: the run is still going or was stopped; "
              "this report shows the rows written so far)")
    cls = "ok" if s and not failed else "warn"
    status += f"; {len(failed)} client{'s' if len(failed) != 1 else ''} failed" if failed else ""
    return (f'<h2>Summary</h2><p class="{cls}">Status: {esc(status)}</p>' + key_values(pairs))


def _png(fig) -> bytes | None:
    return None if fig is None else figures.png(fig)


def _accuracy_section(run: Run) -> str:
    out = ["<h2>Accuracy</h2>"]
    fig = _png(figures.accuracy_figure(run))
    if fig is None:
        return out[0] + "<p>No epoch finished yet, so there is no test accuracy to show.</p>"
    cap = ("Test accuracy after each epoch, against the epoch, the wall time"
           + (" and the simulated time" if run.has_link() else "") + ". Shaded bands are budget phases.")
    out.append(image(fig, "test accuracy against epoch and time", cap))
    e = run.epochs
    sim = epoch_sim_time(run) if run.has_link() else None
    header = ["epoch", "budget", "lr", "train loss", "test accuracy (%)", "bytes up", "bytes down", "samples",
              "clients", "time (s)"] + (["simulated time (s)"] if sim is not None else [])
    rows = []
    for i in range(run.n_epochs):
        r = [int(e["epoch"][i]) + 1, int(e["budget"][i]), float(e["lr"][i]), float(e["train_loss"][i]),
             100 * float(e["test_accuracy"][i]), human_bytes(int(e["bytes_up"][i])),
             human_bytes(int(e["bytes_down"][i])), int(e["samples"][i]), int(e["clients"][i]), float(e["time"][i])]
        rows.append(r + ([float(sim[i])] if sim is not None else []))
    numeric = [True] * len(header)
    return "".join(out) + table(header, rows, numeric=numeric)


def _client_rows(run: Run) -> tuple[list, list[str]]:
    s, ev = run.steps, run.evals
    failed = run.failed_clients
    rows, classes = [], []
    for c in run.clients:
        m = s["client"] == c if run.n_steps else np.array([], dtype=bool)
        lat = s["latency"][m] if run.n_steps else np.array([])
        acc = "-"
        if ev:
            em = ev["client"] == c
            if em.any():
                last = int(ev["epoch"][em].max())
                k = em & (ev["epoch"] == last)
                acc = f"{100 * ev['correct'][k].sum() / max(ev['total'][k].sum(), 1):.1f} (epoch {last + 1})"
        status = f"failed: {failed[str(c)]}" if str(c) in failed else "ok"
        rows.append([c, int(m.sum()), int(s["samples"][m].sum()) if run.n_steps else 0,
                     human_bytes(int(s["bytes_up"][m].sum())) if run.n_steps else "-",
                     human_bytes(int(s["bytes_down"][m].sum())) if run.n_steps else "-",
                     1000 * float(np.median(lat)) if len(lat) else math.nan, acc, status])
        classes.append("bad" if str(c) in failed else "")
    return rows, classes


def _traffic_section(run: Run) -> str:
    out = ["<h2>Traffic</h2>"]
    fig = _png(figures.traffic_figure(run))
    if fig is None:
        return out[0] + "<p>No training step was recorded.</p>"
    out.append(image(fig, "cumulative bytes up and down over time",
                     "Training traffic over wall time: activations up (top), gradients down (bottom)."))
    out.append(image(_png(figures.clients_figure(run)), "bytes per client, up and down",
                     "Training traffic of each client: up (solid) and down (hatched)."))
    rows, classes = _client_rows(run)
    out.append("<h3>Per client</h3>" + table(
        ["client", "steps", "samples", "bytes up", "bytes down", "median step (ms)", "last test accuracy (%)",
         "status"], rows, numeric=[True, True, True, True, True, True, True, False], row_class=classes))
    return "".join(out)


def _latency_section(run: Run) -> str:
    out = ["<h2>Step latency</h2>"]
    fig = _png(figures.latency_figure(run))
    if fig is None:
        return out[0] + "<p>No training step was recorded.</p>"
    out.append(image(fig, "step latency over time", "Each dot is one client step; lines are p50 and p95 over "
                                                     "time bins."))
    s = run.steps
    header = ["part of the step", *(f"p{q} (ms)" for q in QS), "max (ms)"]
    rows = []
    for col, label in PHASES:
        if col in s and (col not in ("compute_s", "uplink_s", "downlink_s") or run.has_link()):
            rows.append([label, *(1000 * v for v in percentiles(s[col], QS))])
    out.append("<h3>Percentiles over all steps</h3>" + table(header, rows))
    by_budget = []
    for b in sorted(int(x) for x in np.unique(s["budget"])):
        m = s["budget"] == b
        by_budget.append([b, int(m.sum()), *(1000 * v for v in percentiles(s["latency"][m], QS))])
    out.append("<h3>Whole step, by budget</h3>" + table(["budget", "steps", *header[1:]], by_budget))
    return "".join(out)


def _budget_section(run: Run) -> str:
    out = ["<h2>Budget transitions</h2>"]
    if not run.n_steps:
        return out[0] + "<p>No training step was recorded.</p>"
    fig = _png(figures.budget_figure(run))
    if fig is None:
        out.append(f"<p>One budget throughout: B = {int(run.steps['budget'][0])} channels; no transition.</p>")
        return "".join(out)
    out.append(image(fig, "budget over time", "Channels sent (B) over wall time."))
    changes = budget_changes(run)
    groups: dict[tuple, list] = {}
    for ch in changes:
        groups.setdefault((ch["epoch"], ch["from"], ch["to"]), []).append(ch)
    rows = []
    n_clients = len({int(c) for c in np.unique(run.steps["client"])})
    lrs = {(t.get("epoch"), t.get("to_budget")): t.get("lr") for t in (run.summary or {}).get("transitions", [])}
    for (epoch, a, b), chs in sorted(groups.items(), key=lambda kv: min(c["time"] for c in kv[1])):
        who = "all clients" if len(chs) == n_clients and n_clients > 1 else ", ".join(
            str(c["client"]) for c in sorted(chs, key=lambda c: c["client"]))
        ts = [c["time"] for c in chs]
        when = f"{min(ts):.1f}" if max(ts) - min(ts) < 0.05 else f"{min(ts):.1f} – {max(ts):.1f}"
        rows.append([epoch + 1, f"{a} → {b}", lrs.get((epoch, b), "-"), who, when])
    out.append(table(["from epoch", "budget", "lr after", "clients", "first step at (s)"], rows,
                     numeric=[True, False, True, False, True]))
    return "".join(out)


def _link_section(run: Run) -> str:
    if not run.has_link():
        return ""
    out = ["<h2>Edge link (emulated)</h2>"]
    fig = _png(figures.link_figure(run))
    if fig is not None:
        out.append(image(fig, "link capacity over simulated time",
                         "Capacity of the emulated links over simulated time (Mbit/s)."))
    s = run.steps
    rows = []
    for col, label in (("uplink_s", "uplink transfer"), ("downlink_s", "downlink transfer"),
                       ("compute_s", "client compute")):
        if col in s:
            rows.append([label, *(1000 * v for v in percentiles(s[col], QS))])
    if rows:
        out.append(table(["simulated time per step", *(f"p{q} (ms)" for q in QS), "max (ms)"], rows))
    wire = [(c, w) for c, w in (("bytes_up", "wire_bytes_up"), ("bytes_down", "wire_bytes_down")) if w in s]
    if wire:
        out.append(key_values([(f"{w.replace('_', ' ')} / payload", f"{human_bytes(int(s[w].sum()))} / "
                                f"{human_bytes(int(s[c].sum()))}") for c, w in wire]))
    return "".join(out)


def _failures_section(run: Run) -> str:
    failed = run.failed_clients
    if not failed:
        return "<h2>Failed clients</h2><p class=\"ok\">None: every client finished.</p>" if run.summary else ""
    rows = []
    for c, err in sorted(failed.items(), key=lambda kv: int(kv[0])):
        m = run.steps["client"] == int(c) if run.n_steps else np.array([], dtype=bool)
        last = (f"epoch {int(run.steps['epoch'][m].max()) + 1}, {run.steps['time'][m].max():.1f} s"
                if m.any() else "no step")
        rows.append([int(c), int(m.sum()), last, err])
    return ("<h2>Failed clients</h2><p class=\"warn\">These clients were dropped; the others went on and every "
            "step they had done is kept.</p>" + table(["client", "steps kept", "last step", "error"], rows,
                                                     numeric=[True, True, False, False], row_class=["bad"] * len(rows)))


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v if not isinstance(v, list) else ", ".join(map(str, v))))
    return out


def _config_section(run: Run) -> str:
    if not run.config:
        return "<h2>Configuration</h2><p>No config.json in the run directory.</p>"
    pairs = _flatten(run.config)
    half = (len(pairs) + 1) // 2
    return ("<h2>Configuration</h2><p>Every resolved option (<code>config.json</code>).</p><div class=\"cols\">"
            + key_values(pairs[:half]) + key_values(pairs[half:]) + "</div>")


def build_report(run: Run) -> str:
    """The report page of a loaded run, as HTML text."""
    from raysplit.energy.report import build_energy_report, is_energy_run

    if is_energy_run(run.path):  # jobs/energy_split.py: inferences, no training steps
        return build_energy_report(run)
    s = run.summary or {}
    title = f"raysplit run {s.get('run') or run.path.name}"
    sub = " · ".join(str(x) for x in (s.get("method"), s.get("dataset"), s.get("model"), str(run.path)) if x)
    sections = [("summary", _summary_section(run)), ("accuracy", _accuracy_section(run)),
                ("traffic", _traffic_section(run)), ("latency", _latency_section(run)),
                ("budget", _budget_section(run)), ("link", _link_section(run)),
                ("failures", _failures_section(run)), ("config", _config_section(run))]
    return page(title, sub, [(k, v) for k, v in sections if v])


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Read ``run_dir`` and write its report (default ``run_dir/report.html``); returns the path."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / REPORT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(build_report(run), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path
