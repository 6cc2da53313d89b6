"""Every metric raysplit exports, defined in one place, and a thin recorder.

The spec (:data:`METRICS`) is pure data: the Grafana dashboard
(:mod:`raysplit.dashboards`) and the tests are generated/checked from it, so a
metric cannot be renamed in one place and forgotten in another.

Metrics go through ``ray.util.metrics``; every Ray node's metrics agent then
exposes them in Prometheus text format on
``http://<node>:<ray.nodes()[i]["MetricsExportPort"]>/metrics``. What Ray 2.60
(OpenTelemetry recorder, the default) actually exports, measured here:

* every name gets the prefix ``ray_``;
* a Counter ``x`` appears only as ``ray_x_total`` (TYPE counter). With
  ``RAY_enable_open_telemetry=0`` (legacy OpenCensus path) Ray also exports the
  bare ``ray_x`` as a gauge for bug compatibility; the dashboard never uses it;
* a Gauge ``x`` appears as ``ray_x``;
* a Histogram ``x`` appears as ``ray_x_bucket`` (with ``le``), ``ray_x_sum``
  and ``ray_x_count``;
* every series carries, besides our tag keys, ``SessionName``, ``NodeAddress``,
  ``WorkerId``, ``Component``, ``Version`` and ``otel_scope_*`` labels: one
  series per recording *process*, so queries must aggregate
  (``sum by (client)``) rather than assume one series per client;
* a value shows up on the endpoint ~10 s after it is recorded;
* histogram ``_sum`` is NOT the sum of observed values: workers ship bucket
  counts to the node agent, which replays each count at its bucket's midpoint
  (first bucket: ``b0/2``; the +Inf bucket: ``2 * last boundary``). Means
  computed as ``_sum / _count`` are therefore only bucket-resolution
  approximations (``open_telemetry_metric_recorder.py``,
  ``_histogram_bucket_midpoints``); quantiles from ``_bucket`` are unaffected.

Ray quirks the :class:`Recorder` absorbs: ``Counter.inc`` raises on values
``<= 0`` (so zero increments are skipped), values must be Python ``int`` /
``float`` (numpy scalars raise ``TypeError``; we convert), and tag values
must be ``str`` (we convert).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "METRICS",
    "MetricSpec",
    "Recorder",
    "SERIES_PREFIX",
    "by_name",
    "exported_names",
    "prometheus_names",
]

KINDS = ("counter", "gauge", "histogram")
SERIES_PREFIX = "ray_"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


# Seconds: 1 ms .. 10 s in a 1-2.5-5 progression (13 buckets + Ray's +Inf).
LATENCY_BOUNDARIES: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Micro-batches merged into one server pass (1 = no merging).
SHARD_BATCH_BOUNDARIES: tuple[float, ...] = (
    1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0,
)

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "raysplit_bytes_up", "counter",
        "Bytes of activation messages sent client->server (len of the encoded buffer).",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_bytes_down", "counter",
        "Bytes of gradient messages sent server->client (len of the encoded buffer).",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_samples", "counter",
        "Training samples processed.",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_step_latency_seconds", "histogram",
        "Wall time of one client training step (forward, transfer, server, backward).",
        ("tenant", "client"),
        LATENCY_BOUNDARIES,
    ),
    MetricSpec(
        "raysplit_budget", "gauge",
        "Current budget B (channels sent).",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_train_loss", "gauge",
        "Last training loss.",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_test_accuracy", "gauge",
        "Last test accuracy (0-1).",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_shard_queue_depth", "gauge",
        "Micro-batches waiting at a server shard.",
        ("tenant", "shard"),
    ),
    MetricSpec(
        "raysplit_shard_batch_size", "histogram",
        "Micro-batches merged into one server forward/backward.",
        ("tenant", "shard"),
        SHARD_BATCH_BOUNDARIES,
    ),
    MetricSpec(
        "raysplit_budget_transitions", "counter",
        "Budget schedule transitions.",
        ("tenant",),
    ),
    # The emulated network (raysplit.link): seconds are simulated in virtual mode, wall in realtime.
    MetricSpec(
        "raysplit_link_up_seconds", "counter",
        "Seconds a client's activations spent on the emulated uplink (sharing, latency, retransmissions).",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_link_down_seconds", "counter",
        "Seconds a client's gradients spent on the emulated downlink.",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_wire_bytes_up", "counter",
        "Bytes on the emulated uplink: payload, per-packet headers and retransmissions.",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_wire_bytes_down", "counter",
        "Bytes on the emulated downlink: payload, per-packet headers and retransmissions.",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_sim_time_seconds", "gauge",
        "A client's emulated clock at its last step.",
        ("tenant", "client"),
    ),
    MetricSpec(
        "raysplit_medium_utilization", "gauge",
        "Share of a shared medium's capacity (a cell, a shard's backhaul) carried over the last interval (0-1).",
        ("tenant", "medium"),
    ),
    MetricSpec(
        "raysplit_failures", "counter",
        "Failures of clients, shards and the scheduler, by the failure policy's decision "
        "(restart, exclude, raise).",
        ("tenant", "component", "decision"),
    ),
    MetricSpec(
        "raysplit_recovery_seconds", "histogram",
        "Time from a failure being noticed until the part is back (restored, replayed, serving).",
        ("tenant", "component"),
        LATENCY_BOUNDARIES + (30.0, 60.0),
    ),
    MetricSpec(
        "raysplit_rejected_messages", "counter",
        "Messages a shard refused (malformed, oversized, unauthenticated, another tenant's, "
        "wrong shape, unknown client, replayed, bad labels, NaN/Inf), by reason.",
        ("tenant", "shard", "reason"),
    ),
    MetricSpec(
        "raysplit_duplicate_steps", "counter",
        "Steps a shard received again (a retry after a restart) and answered from its step "
        "log without applying them twice.",
        ("tenant", "shard"),
    ),
    MetricSpec(
        "raysplit_nonfinite_steps", "counter",
        "Steps with NaN/Inf in a loss, activation or gradient, by where and what was done "
        "(skip, stop).",
        ("tenant", "client", "where", "action"),
    ),
)

_BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def by_name(name: str) -> MetricSpec:
    """The spec called ``name`` (KeyError if there is none)."""
    return _BY_NAME[name]


def prometheus_names(spec: MetricSpec | str) -> tuple[str, ...]:
    """The series names Ray 2.60 exports for ``spec`` on the Prometheus endpoint.

    Counter ``x`` -> ``ray_x_total``; gauge ``x`` -> ``ray_x``; histogram ``x``
    -> ``ray_x_bucket``, ``ray_x_sum``, ``ray_x_count``.
    """
    if isinstance(spec, str):
        spec = by_name(spec)
    base = SERIES_PREFIX + spec.name
    if spec.kind == "counter":
        return (base + "_total",)
    if spec.kind == "gauge":
        return (base,)
    if spec.kind == "histogram":
        return (base + "_bucket", base + "_sum", base + "_count")
    raise ValueError(f"unknown metric kind {spec.kind!r} for {spec.name}")


def exported_names() -> dict[str, MetricSpec]:
    """Every exported series name -> the spec it comes from."""
    return {series: m for m in METRICS for series in prometheus_names(m)}


# ---------------------------------------------------------------------------
# Recorder
# ---------------------------------------------------------------------------

# Ray metric objects are created once per process and shared by all Recorders
# in it (re-creating a metric with the same name per Recorder would register it
# again with the process's metric recorder).
_OBJECTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _metric_object(spec: MetricSpec) -> Any:
    obj = _OBJECTS.get(spec.name)
    if obj is not None:
        return obj
    with _LOCK:
        obj = _OBJECTS.get(spec.name)
        if obj is None:
            from ray.util import metrics as rm

            if spec.kind == "counter":
                obj = rm.Counter(spec.name, spec.description, tag_keys=spec.tag_keys)
            elif spec.kind == "gauge":
                obj = rm.Gauge(spec.name, spec.description, tag_keys=spec.tag_keys)
            elif spec.kind == "histogram":
                obj = rm.Histogram(
                    spec.name,
                    spec.description,
                    boundaries=list(spec.boundaries),
                    tag_keys=spec.tag_keys,
                )
            else:  # pragma: no cover - guarded by tests on METRICS
                raise ValueError(f"unknown metric kind {spec.kind!r}")
            _OBJECTS[spec.name] = obj
    return obj


class Recorder:
    """Thin wrapper creating ray.util.metrics objects lazily from METRICS; safe to
    construct outside Ray (then every call is a no-op, enabled=False).

    ``enabled=None`` means enabled iff ``ray.is_initialized()`` at construction
    (true inside every Ray actor/task and in a driver after ``ray.init``).
    A Recorder pickles as its ``enabled`` flag only, so it can be passed to actors;
    the Ray metric objects are (re)created lazily in whichever process records.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        if enabled is None:
            try:
                import ray

                enabled = bool(ray.is_initialized())
            except ImportError:  # pragma: no cover - ray is a hard dependency
                enabled = False
        self.enabled = bool(enabled)

    def __repr__(self) -> str:
        return f"Recorder(enabled={self.enabled})"

    def __getstate__(self) -> dict:
        return {"enabled": self.enabled}

    def __setstate__(self, state: dict) -> None:
        self.enabled = bool(state["enabled"])

    # -- low-level -----------------------------------------------------------

    def _inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        value = _number(value)
        if value == 0:
            return  # Ray's Counter.inc rejects 0
        if value < 0:
            raise ValueError(f"{name}: counter increment must be >= 0, got {value}")
        _metric_object(_BY_NAME[name]).inc(value, tags=tags)

    def _set(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric_object(_BY_NAME[name]).set(_number(value), tags=tags)

    def _observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric_object(_BY_NAME[name]).observe(_number(value), tags=tags)

    # -- API -----------------------------------------------------------------
    # Every series carries the tenant next to the client or shard id, so that many
    # tenants' runs on one cluster stay apart in Prometheus.

    def step(
        self,
        client: str,
        *,
        tenant: str,
        bytes_up: int,
        bytes_down: int,
        samples: int,
        latency_s: float,
        loss: float,
    ) -> None:
        """One client training step: bytes both ways, samples, wall time, loss."""
        if not self.enabled:
            return
        tags = {"tenant": str(tenant), "client": str(client)}
        self._inc("raysplit_bytes_up", bytes_up, tags)
        self._inc("raysplit_bytes_down", bytes_down, tags)
        self._inc("raysplit_samples", samples, tags)
        self._observe("raysplit_step_latency_seconds", latency_s, tags)
        self._set("raysplit_train_loss", loss, tags)

    def budget(self, client: str, budget: int, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._set("raysplit_budget", budget, {"tenant": str(tenant), "client": str(client)})

    def accuracy(self, client: str, acc: float, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._set("raysplit_test_accuracy", acc, {"tenant": str(tenant), "client": str(client)})

    def queue_depth(self, shard: str, depth: int, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._set("raysplit_shard_queue_depth", depth, {"tenant": str(tenant), "shard": str(shard)})

    def shard_batch(self, shard: str, n_microbatches: int, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._observe("raysplit_shard_batch_size", n_microbatches, {"tenant": str(tenant), "shard": str(shard)})

    def transition(self, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._inc("raysplit_budget_transitions", 1, {"tenant": str(tenant)})

    def link(self, client: str, *, tenant: str, uplink_s: float, downlink_s: float, wire_up: int, wire_down: int,
             sim_time: float) -> None:
        """One step on the emulated network: link time and wire bytes each way, the clock."""
        if not self.enabled:
            return
        tags = {"tenant": str(tenant), "client": str(client)}
        self._inc("raysplit_link_up_seconds", uplink_s, tags)
        self._inc("raysplit_link_down_seconds", downlink_s, tags)
        self._inc("raysplit_wire_bytes_up", wire_up, tags)
        self._inc("raysplit_wire_bytes_down", wire_down, tags)
        self._set("raysplit_sim_time_seconds", sim_time, tags)

    def medium_utilization(self, medium: str, value: float, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._set("raysplit_medium_utilization", value, {"tenant": str(tenant), "medium": str(medium)})


    # -- reliability ---------------------------------------------------------

    def failure(self, component: str, decision: str, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._inc("raysplit_failures", 1, {"tenant": str(tenant), "component": str(component),
                                           "decision": str(decision)})

    def recovery(self, component: str, seconds: float, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._observe("raysplit_recovery_seconds", seconds, {"tenant": str(tenant), "component": str(component)})

    def rejected(self, shard: str, reason: str, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._inc("raysplit_rejected_messages", 1, {"tenant": str(tenant), "shard": str(shard), "reason": str(reason)})

    def duplicate(self, shard: str, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._inc("raysplit_duplicate_steps", 1, {"tenant": str(tenant), "shard": str(shard)})

    def nonfinite(self, client: str, where: str, action: str, *, tenant: str) -> None:
        if not self.enabled:
            return
        self._inc("raysplit_nonfinite_steps", 1, {"tenant": str(tenant), "client": str(client), "where": str(where),
                                                  "action": str(action)})


def _number(value: Any) -> float | int:
    """Plain Python int/float from any real number (Ray rejects numpy ints)."""
    if type(value) in (int, float):
        return value
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "item"):  # numpy / torch scalars (np.float64 is a float subclass)
        value = value.item()
    if type(value) is int:
        return value
    return float(value)
