"""The raysplit Grafana dashboard, generated from a Python spec.

Regenerate the committed file with::

    python tools/dashboards.py --out dashboards/raysplit.json

(``--check`` exits non-zero if the file differs from what the spec generates).

Conventions follow Ray's own dashboards (``ray/dashboard/modules/metrics/
dashboards/``): every panel's datasource is the string ``${datasource}``, a
hidden templating variable of type ``datasource`` with query ``prometheus``;
a ``SessionName`` query variable filters every expression to one Ray session
(Ray stamps a ``SessionName`` label on every series); rates use
``$__rate_interval``. We add a ``Client`` variable for the per-client panels.

Series names are never written by hand: :func:`series` derives them from
:data:`raysplit.observability.metrics.METRICS` via :func:`raysplit.observability.metrics.prometheus_names`.

To use it: import the JSON in Grafana (Dashboards -> Import) with a
Prometheus datasource that scrapes the Ray nodes (Ray writes a ready scrape
config to ``/tmp/ray/session_latest/metrics/prometheus/prometheus.yml``), or
drop it next to Ray's generated dashboards in
``/tmp/ray/session_latest/metrics/grafana/dashboards/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from raysplit.observability.metrics import prometheus_names

__all__ = [
    "DASHBOARD_UID",
    "PANELS",
    "Panel",
    "Target",
    "build_dashboard",
    "main",
    "render",
    "series",
]

DASHBOARD_UID = "raysplit"
DATASOURCE = "${datasource}"
RATE = "$__rate_interval"

SESSION_FILTER = 'SessionName=~"$SessionName"'
CLIENT_FILTER = 'client=~"$Client"'


def series(metric: str, suffix: str = "") -> str:
    """Exported series name of ``metric`` ending in ``suffix``.

    ``series("raysplit_bytes_up")`` -> ``ray_raysplit_bytes_up_total``;
    ``series("raysplit_step_latency_seconds", "_bucket")`` -> ``..._bucket``.
    Raises if the metric or suffix is not something Ray exports.
    """
    names = prometheus_names(metric)
    if not suffix:
        if len(names) != 1:
            raise ValueError(f"{metric} exports {names}; pass a suffix")
        return names[0]
    hits = [n for n in names if n.endswith(suffix)]
    if len(hits) != 1:
        raise ValueError(f"{metric} exports {names}; no unique one ending in {suffix!r}")
    return hits[0]


def sel(metric: str, suffix: str = "", *, by_client: bool = True) -> str:
    """``series{SessionName=~"$SessionName"[,client=~"$Client"]}``."""
    filters = [SESSION_FILTER] + ([CLIENT_FILTER] if by_client else [])
    return f"{series(metric, suffix)}{{{','.join(filters)}}}"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    type: str = "timeseries"  # "timeseries" | "stat"
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    extra_defaults: dict = field(default_factory=dict)


def _rate(metric: str, suffix: str = "", by_client: bool = True) -> str:
    return f"rate({sel(metric, suffix, by_client=by_client)}[{RATE}])"


def _quantile(q: float, metric: str, by: str, by_client: bool) -> str:
    labels = f"{by}, le" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) "
        f"({_rate(metric, '_bucket', by_client)}))"
    )


def _mean(metric: str, by: str, by_client: bool) -> str:
    grp = f"sum by ({by}) " if by else "sum"
    return (
        f"{grp}({_rate(metric, '_sum', by_client)}) / "
        f"{grp}({_rate(metric, '_count', by_client)})"
    )


LAT = "raysplit_step_latency_seconds"
SHB = "raysplit_shard_batch_size"

PANELS: tuple[Panel, ...] = (
    # --- headline stats (one row of 6-wide stat panels) ----------------------
    Panel(
        "Samples processed",
        "Training samples processed by all selected clients.",
        (Target(f"sum({sel('raysplit_samples')})", "samples"),),
        unit="short", type="stat", width=6, height=4,
    ),
    Panel(
        "Bytes up (total)",
        "Activation bytes sent client->server, all selected clients.",
        (Target(f"sum({sel('raysplit_bytes_up')})", "up"),),
        unit="bytes", type="stat", width=6, height=4,
    ),
    Panel(
        "Bytes up per sample",
        "Cumulative activation bytes divided by cumulative samples (the paper's traffic figure).",
        (Target(f"sum({sel('raysplit_bytes_up')}) / sum({sel('raysplit_samples')})", "B/sample"),),
        unit="bytes", type="stat", width=6, height=4, decimals=0,
    ),
    Panel(
        "Budget transitions",
        "Budget schedule transitions (deprune/prune steps) so far.",
        (Target(f"sum({sel('raysplit_budget_transitions', by_client=False)})", "transitions"),),
        unit="none", type="stat", width=6, height=4, decimals=0,
    ),
    # --- traffic ---------------------------------------------------------------
    Panel(
        "Bytes up rate per client",
        "Activation bytes/s sent client->server.",
        (
            Target(f"sum by (client) ({_rate('raysplit_bytes_up')})", "{{client}}"),
            Target(f"sum({_rate('raysplit_bytes_up')})", "total"),
        ),
        unit="Bps",
    ),
    Panel(
        "Bytes down rate per client",
        "Gradient bytes/s sent server->client.",
        (
            Target(f"sum by (client) ({_rate('raysplit_bytes_down')})", "{{client}}"),
            Target(f"sum({_rate('raysplit_bytes_down')})", "total"),
        ),
        unit="Bps",
    ),
    Panel(
        "Cumulative bytes",
        "Total bytes sent since the job started, each direction.",
        (
            Target(f"sum({sel('raysplit_bytes_up')})", "up (activations)"),
            Target(f"sum({sel('raysplit_bytes_down')})", "down (gradients)"),
        ),
        unit="bytes",
    ),
    Panel(
        "Samples/s per client",
        "Training throughput per client and in total.",
        (
            Target(f"sum by (client) ({_rate('raysplit_samples')})", "{{client}}"),
            Target(f"sum({_rate('raysplit_samples')})", "total"),
        ),
        unit="short",
    ),
    # --- latency ---------------------------------------------------------------
    Panel(
        "Step latency p50 / p95",
        "Wall time of one client step (forward, transfer, server, backward), "
        "quantiles over all selected clients. The mean is _sum/_count, which Ray "
        "rebuilds from bucket midpoints, so it is only bucket-accurate.",
        (
            Target(_quantile(0.5, LAT, "", True), "p50"),
            Target(_quantile(0.95, LAT, "", True), "p95"),
            Target(_mean(LAT, "", True), "mean (approx.)"),
        ),
        unit="s",
    ),
    Panel(
        "Step latency p95 per client",
        "95th percentile of the client step wall time, per client.",
        (Target(_quantile(0.95, LAT, "client", True), "{{client}}"),),
        unit="s",
    ),
    # --- training state ----------------------------------------------------------
    Panel(
        "Budget per client",
        "Current budget B (channels transmitted).",
        (Target(f"max by (client) ({sel('raysplit_budget')})", "{{client}}"),),
        unit="none", decimals=0, min=0,
    ),
    Panel(
        "Train loss",
        "Last training loss reported by each client.",
        (Target(f"avg by (client) ({sel('raysplit_train_loss')})", "{{client}}"),),
        unit="none",
    ),
    Panel(
        "Test accuracy",
        "Last test accuracy per client.",
        (Target(f"max by (client) ({sel('raysplit_test_accuracy')})", "{{client}}"),),
        unit="percentunit", min=0, max=1,
    ),
    Panel(
        "Budget transitions over time",
        "Cumulative budget schedule transitions.",
        (Target(f"sum({sel('raysplit_budget_transitions', by_client=False)})", "transitions"),),
        unit="none", decimals=0, min=0,
    ),
    # --- emulated network (raysplit.link) ----------------------------------------
    Panel(
        "Link time per client",
        "Seconds per second each client spends on the emulated link, up and down (simulated "
        "seconds in virtual mode: how much of its emulated time goes to the network).",
        (
            Target(f"sum by (client) ({_rate('raysplit_link_up_seconds')})", "up {{client}}"),
            Target(f"sum by (client) ({_rate('raysplit_link_down_seconds')})", "down {{client}}"),
        ),
        unit="s",
    ),
    Panel(
        "Medium utilisation",
        "Share of each shared medium's capacity (cells, shard backhauls) carried over the last "
        "interval.",
        (Target(f"max by (medium) ({sel('raysplit_medium_utilization', by_client=False)})", "{{medium}}"),),
        unit="percentunit", min=0, max=1,
    ),
    Panel(
        "Wire bytes rate per client",
        "Bytes/s on the emulated wire (payload, headers, retransmissions), up and down.",
        (
            Target(f"sum by (client) ({_rate('raysplit_wire_bytes_up')})", "up {{client}}"),
            Target(f"sum by (client) ({_rate('raysplit_wire_bytes_down')})", "down {{client}}"),
        ),
        unit="Bps",
    ),
    Panel(
        "Emulated clock per client",
        "Each client's emulated clock (simulated seconds in virtual mode).",
        (Target(f"max by (client) ({sel('raysplit_sim_time_seconds')})", "{{client}}"),),
        unit="s",
    ),
    # --- server shards -----------------------------------------------------------
    Panel(
        "Shard queue depth",
        "Micro-batches waiting at each server shard.",
        (Target(f"sum by (shard) ({sel('raysplit_shard_queue_depth', by_client=False)})", "{{shard}}"),),
        unit="none", min=0,
    ),
    Panel(
        "Shard batch size",
        "Micro-batches merged into one server forward/backward: mean (bucket-midpoint "
        "approximation, see raysplit.observability.metrics) and p95 per shard.",
        (
            Target(_mean(SHB, "shard", False), "mean {{shard}}"),
            Target(_quantile(0.95, SHB, "shard", False), "p95 {{shard}}"),
        ),
        unit="none", min=0,
    ),
    # --- faults and bad input ------------------------------------------------------
    Panel(
        "Failures by decision",
        "Failures of clients, shards and the scheduler, by what the failure policy decided "
        "(restart, exclude, raise).",
        (Target(f"sum by (component, decision) ({sel('raysplit_failures', by_client=False)})",
                "{{component}} {{decision}}"),),
        unit="none", decimals=0, min=0,
    ),
    Panel(
        "Recovery time p95",
        "Time from a failure being noticed until the part was back, per component.",
        (Target(_quantile(0.95, "raysplit_recovery_seconds", "component", False), "{{component}}"),),
        unit="s", min=0,
    ),
    Panel(
        "Rejected messages by reason",
        "Messages the shards refused: malformed, oversized, unauthenticated (another tenant's "
        "key), wrong shape, unknown client, replayed, bad labels, NaN/Inf.",
        (Target(f"sum by (reason) ({sel('raysplit_rejected_messages', by_client=False)})", "{{reason}}"),),
        unit="none", decimals=0, min=0,
    ),
    Panel(
        "Retried steps answered from the log",
        "Steps a shard received again after a restart and answered without applying twice.",
        (Target(f"sum by (shard) ({sel('raysplit_duplicate_steps', by_client=False)})", "{{shard}}"),),
        unit="none", decimals=0, min=0,
    ),
    Panel(
        "Non-finite steps",
        "Steps with NaN/Inf in a loss, activation or gradient, by where and what was done.",
        (Target(f"sum by (where, action) ({sel('raysplit_nonfinite_steps')})", "{{where}} {{action}}"),),
        unit="none", decimals=0, min=0,
    ),
)


def _templating() -> dict:
    probe = series("raysplit_samples")
    return {
        "list": [
            {
                "current": {"selected": False},
                "description": "Prometheus datasource that scrapes the Ray nodes.",
                "hide": 2,
                "includeAll": False,
                "label": "Datasource",
                "multi": False,
                "name": "datasource",
                "options": [],
                "query": "prometheus",
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
                "type": "datasource",
            },
            {
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "datasource": DATASOURCE,
                "definition": f"label_values({probe}, SessionName)",
                "description": "Filter queries to specific Ray sessions.",
                "hide": 0,
                "includeAll": True,
                "label": "SessionName",
                "multi": False,
                "name": "SessionName",
                "options": [],
                "query": {
                    "query": f"label_values({probe}, SessionName)",
                    "refId": "StandardVariableQuery",
                },
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
                "sort": 2,
                "type": "query",
            },
            {
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "datasource": DATASOURCE,
                "definition": f"label_values({probe}{{{SESSION_FILTER}}}, client)",
                "description": "Filter the per-client panels to some clients.",
                "hide": 0,
                "includeAll": True,
                "label": "Client",
                "multi": True,
                "name": "Client",
                "options": [],
                "query": {
                    "query": f"label_values({probe}{{{SESSION_FILTER}}}, client)",
                    "refId": "StandardVariableQuery",
                },
                "refresh": 2,
                "regex": "",
                "skipUrlSync": False,
                "sort": 7,
                "type": "query",
            },
        ]
    }


def _panel_json(panel: Panel, panel_id: int, grid: dict) -> dict:
    defaults: dict = {"unit": panel.unit}
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    defaults.update(panel.extra_defaults)
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": t.expr,
            "interval": "",
            "legendFormat": t.legend,
            "refId": chr(ord("A") + i),
        }
        for i, t in enumerate(panel.targets)
    ]
    out = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "gridPos": grid,
        "id": panel_id,
        "targets": targets,
        "title": panel.title,
        "type": panel.type,
    }
    if panel.type == "timeseries":
        defaults.setdefault("custom", {"fillOpacity": 10, "lineWidth": 1, "showPoints": "never"})
        out["options"] = {
            "legend": {"calcs": ["lastNotNull"], "displayMode": "table", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.type == "stat":
        defaults.setdefault("color", {"mode": "thresholds"})
        defaults.setdefault(
            "thresholds", {"mode": "absolute", "steps": [{"color": "blue", "value": None}]}
        )
        out["options"] = {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    else:
        raise ValueError(f"unsupported panel type {panel.type!r}")
    out["fieldConfig"] = {"defaults": defaults, "overrides": []}
    return out


def _layout(panels: tuple[Panel, ...]) -> list[dict]:
    """Left-to-right, top-to-bottom packing on Grafana's 24-column grid."""
    grids, x, y, row_h = [], 0, 0, 0
    for p in panels:
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        grids.append({"h": p.height, "w": p.width, "x": x, "y": y})
        x += p.width
        row_h = max(row_h, p.height)
    return grids


def build_dashboard(panels: tuple[Panel, ...] = PANELS) -> dict:
    """The dashboard as a JSON-ready dict (ids are 1..N in spec order)."""
    grids = _layout(panels)
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": "-- Grafana --",
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "raysplit split-learning cluster: traffic, throughput, latency, "
        "budgets, accuracy and server shards (metrics exported through Ray).",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": [_panel_json(p, i + 1, g) for i, (p, g) in enumerate(zip(panels, grids))],
        "refresh": "30s",
        "schemaVersion": 27,
        "style": "dark",
        "tags": ["raysplit", "ray"],
        "templating": _templating(),
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "raysplit",
        "uid": DASHBOARD_UID,
        "version": 1,
    }


def render(dashboard: dict | None = None) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
    if dashboard is None:
        dashboard = build_dashboard()
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python tools/dashboards.py",
        description="Generate the raysplit Grafana dashboard JSON.",
    )
    ap.add_argument("--out", type=Path, help="write here (default: stdout)")
    ap.add_argument(
        "--check", action="store_true",
        help="do not write; exit 1 if --out differs from the generated dashboard",
    )
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if args.out is None:
            ap.error("--check needs --out")
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"{args.out} is out of date; run: python tools/dashboards.py --out {args.out}",
                  file=sys.stderr)
            return 1
        return 0
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
