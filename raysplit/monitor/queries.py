"""The PromQL behind the monitor's ready-made graph links, built from the metric spec.

Series names come from :data:`raysplit.observability.metrics.METRICS` through
``prometheus_names`` (never typed by hand), as in ``tools/dashboards.py``. Ray exports one
series per recording *process* (``WorkerId`` label), so every query aggregates to the
tenant, client or shard it is about. Rates use a 1-minute window: Ray's metrics agent
updates a counter about every 10 s, and a rate needs two updates in its window.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from raysplit.observability.metrics import METRICS, MetricSpec, prometheus_names

WINDOW = "1m"


@dataclass(frozen=True)
class Query:
    """Args:
    key: short name (used in links and tests).
    title: what the graph shows, with its unit.
    expr: the PromQL expression.
    """

    key: str
    title: str
    expr: str


def _series(metric: str, suffix: str = "") -> str:
    names = prometheus_names(metric)
    return next(n for n in names if n.endswith(suffix)) if suffix else names[0]


def _rate(metric: str, by: str, suffix: str = "") -> str:
    return f"sum by ({by}) (rate({_series(metric, suffix)}[{WINDOW}]))"


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({_series(metric, '_bucket')}[{WINDOW}])))"


def _generic(spec: MetricSpec) -> list[Query]:
    """Graphs for a metric without a hand-chosen query (the link metrics): counters as
    rates, gauges as their maximum, histograms as p50 and p95, each by the metric's tags."""
    by = ", ".join(spec.tag_keys) or "tenant"
    name = spec.name.removeprefix("raysplit_")
    if spec.kind == "counter":
        return [Query(name, f"{spec.description} (per second)", _rate(spec.name, by))]
    if spec.kind == "gauge":
        return [Query(name, spec.description, f"max by ({by}) ({_series(spec.name)})")]
    return [Query(f"{name}_p{int(q * 100)}", f"{spec.description} (p{int(q * 100)})", _quantile(q, spec.name, by))
            for q in (0.5, 0.95)]


def main_queries() -> list[Query]:
    """Throughput, bytes per client both ways, budget per client, step latency, shard
    queue depth, and every link metric the spec defines (the edge emulation's)."""
    lat = "raysplit_step_latency_seconds"
    out = [
        Query("throughput", "throughput: training samples/s per tenant", _rate("raysplit_samples", "tenant")),
        Query("bytes_up", "bytes up per client (B/s, activations)", _rate("raysplit_bytes_up", "tenant, client")),
        Query("bytes_down", "bytes down per client (B/s, gradients)", _rate("raysplit_bytes_down", "tenant, client")),
        Query("budget", "budget per client (channels sent)",
              f"max by (tenant, client) ({_series('raysplit_budget')})"),
        Query("latency_p50", "step latency p50 (s)", _quantile(0.5, lat, "tenant")),
        Query("latency_p95", "step latency p95 (s)", _quantile(0.95, lat, "tenant")),
        Query("queue_depth", "shard queue depth (micro-batches waiting)",
              f"max by (tenant, shard) ({_series('raysplit_shard_queue_depth')})"),
    ]
    for spec in METRICS:
        if "link" in spec.name:
            out += _generic(spec)
    return out


def graph_url(prometheus: str, exprs: list[str] | str, range_input: str = "10m") -> str:
    """A Prometheus web-UI link that opens ``exprs`` as graphs (one panel each)."""
    exprs = [exprs] if isinstance(exprs, str) else exprs
    params = {}
    for i, e in enumerate(exprs):
        params.update({f"g{i}.expr": e, f"g{i}.tab": "0", f"g{i}.range_input": range_input})
    return f"{prometheus.rstrip('/')}/graph?{urllib.parse.urlencode(params)}"
