"""report.html of an energy-aware split run (``jobs/energy_split.py``'s run directory).

The run report (:mod:`raysplit.report`) is made of training steps and epochs; this run has
neither, so it gets its own page, built with the same HTML pieces: the summary, Table III
(simulated, with the paper's figures, and from the cluster), the cuts sent against the
channel gain (``cuts.png``), per client, the per-layer profile (the paper's Fig. 3) and the
configuration. :func:`raysplit.report.build_report` comes here for such a directory
(``python -m raysplit.report RUN_DIR``, and the job at its end through
:func:`raysplit.records.writer.write_run_report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from raysplit.report import _config_section
from raysplit.report.data import Run, _table
from raysplit.report.html import esc, image, key_values, page, table
from raysplit.energy.table import bandwidth_label, table_iii_cells

# What tells an energy-split run directory from a training one (see raysplit.energy.run).
ROWS_NAME = "inferences.parquet"


def is_energy_run(path: str | Path) -> bool:
    return (Path(path) / ROWS_NAME).is_dir() or (Path(path) / "profile.json").exists()


def _pct(x) -> str:
    return f"{100 * x:.2f} %" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _summary(run: Run, s: dict) -> str:
    if not s:
        return ('<h2>Summary</h2><p class="warn">Status: not finished (no summary.json: the run is still going or '
                "was stopped; this report shows what is on disk so far)</p>")
    failed = s.get("failed_clients") or {}
    status = "finished" + (f"; {len(failed)} client{'s' if len(failed) != 1 else ''} failed" if failed else "")
    pairs = [
        ("run", s["run"]), ("tenant", s.get("tenant")),
        ("model / data", f"{s['model']} / {s['dataset']}"),
        ("test accuracy", f"original {_pct(s['original_accuracy'])}, compressed {_pct(s['compressed_accuracy'])}, "
                          f"cluster {_pct(s['cluster_accuracy'])}"),
        ("compression ratio C_r", f"{s['compression_ratio']:.1f} ({s['params_original']:,} -> "
                                  f"{s['params_compressed']:,} non-zero parameters)"),
        ("clients / shards", f"{s['clients']} / {s['shards']}"),
        ("policy / codec / W", f"{s['policy']} / {s['codec']} / {bandwidth_label(s['bandwidth'])}"),
        ("inferences", f"{s['samples']:,} in {s['messages']:,} messages, {s['bytes_up']:,} bytes up"),
        ("per inference", f"E {s['energy_j']:.3e} J (E_p {s['processing_j']:.3e} J, E_tr {s['transmit_j']:.3e} J), "
                          f"CO2 {s['co2_kg']:.3e} kg"),
        ("cuts sent", ", ".join(f"{k}: {v:,}" for k, v in s["cuts"].items()) or "-"),
        ("wall time", f"{s['wall_seconds']:.1f} s (training {s['train_seconds']:.1f} s, "
                      f"cluster inference {s['infer_seconds']:.1f} s)"),
    ]
    pairs += [(f"client {c} failed", m) for c, m in failed.items()]
    cls = "warn" if failed else "ok"
    return f'<h2>Summary</h2><p class="{cls}">Status: {esc(status)}</p>' + key_values(pairs)


def _table_iii(rows: list[dict], title: str, note: str, paper: bool) -> str:
    if not rows:
        return ""
    methods, cells = table_iii_cells(rows, paper=paper)
    return (f"<h2>{esc(title)}</h2><p>{esc(note)}</p>"
            + table([""] + methods, cells, numeric=[False] + [True] * len(methods)))


def _clients(inf: dict[str, np.ndarray], names: list[str]) -> str:
    if not len(inf.get("client", ())):
        return ""
    out = []
    for c in np.unique(inf["client"]):
        m = inf["client"] == c
        n = int(inf["samples"][m].sum())
        cuts = np.bincount(inf["cut"][m])
        top = int(cuts.argmax())
        out.append([int(c), int(m.sum()), n, _pct(inf["correct"][m].sum() / max(n, 1)),
                    float(inf["energy_j"][m].sum() / max(n, 1)), float(inf["transmit_j"][m].sum() / max(n, 1)),
                    names[top] if top < len(names) else str(top), int(inf["bytes_up"][m].sum()),
                    float(np.percentile(inf["latency"][m], 50)), float(np.percentile(inf["latency"][m], 99))])
    return ("<h2>Per client</h2><p>Each client has its own fading channel; energies are per inference "
            "(joules), latency is per message (encode to predictions, wall seconds).</p>"
            + table(["client", "messages", "inferences", "accuracy", "E (J)", "E_tr (J)", "most sent cut",
                     "bytes up", "latency p50 (s)", "latency p99 (s)"], out))


def _profile(path: Path) -> str:
    if not (path / "profile.json").exists():
        return ""
    p = json.loads((path / "profile.json").read_text())
    rows = [[a["layer"], a["params"], b["params"], 1e6 * a["processing_j"], 1e6 * b["processing_j"],
             a["output_elements"], b["sent_elements"]] for a, b in zip(p["original"], p["compressed"])]
    return ("<h2>Per layer (the paper's Fig. 3)</h2><p>Processing energy of each layer (computation, Table I, and "
            "weight fetches, eq. 2) and what a cut after it sends, before and after compression.</p>"
            + table(["layer", "params", "params after", "E_p (µJ)", "E_p after (µJ)", "output elements",
                     "sent after"], rows))


def build_energy_report(run: Run) -> str:
    """The report page of an energy-split run directory, as HTML text."""
    s, path = run.summary or {}, run.path
    simulated = s.get("simulated")
    if simulated is None and (path / "simulated.json").exists():
        simulated = json.loads((path / "simulated.json").read_text())
    names = [a["layer"] for a in json.loads((path / "profile.json").read_text())["compressed"]] \
        if (path / "profile.json").exists() else []
    names = ["input"] + names  # cut 0 is the raw input
    e = run.config.get("energy", {})
    sections = [("summary", _summary(run, s)),
                ("table-iii", _table_iii(simulated or [], "Table III (simulated)",
                                         f"{e.get('draws', '?')} channel draws per bandwidth, {e.get('fading', '?')} "
                                         f"fading, P = {e.get('power', '?')} W, N0 = {e.get('noise_psd', '?')} W/Hz; "
                                         "the paper's figures in brackets (it reports no 5 MHz column).", True)),
                ("cluster", _table_iii(s.get("table") or [], "The cluster run",
                                       f"policy {s.get('policy')}: what was sent, and the baselines priced on the "
                                       "same channel draws.", False))]
    if (path / "cuts.png").exists():
        sections.append(("cuts", "<h2>Cuts and energy against the channel</h2>" + image(
            (path / "cuts.png").read_bytes(), "cut and energy against the channel gain",
            "Left: the cut each message was sent at (and PSNC's, the uncompressed model's best), against |h|²; "
            "right: the energy per inference (the paper's Fig. 4).")))
    sections += [("clients", _clients(_table(path / ROWS_NAME), names)), ("layers", _profile(path)),
                 ("config", _config_section(run))]
    title = f"raysplit energy-aware split {s.get('run') or path.name}"
    sub = " · ".join(str(x) for x in (s.get("model"), s.get("dataset"), str(path)) if x)
    return page(title, sub, [(k, v) for k, v in sections if v])
