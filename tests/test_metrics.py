"""raysplit.observability.metrics: the metric spec, the exported series names, the Recorder.

The slow test starts a local Ray, records every metric (in an actor and in the
driver) and reads them back from the node's Prometheus endpoint, which is what
pins :func:`prometheus_names` to Ray's real exposition behaviour.
"""

from __future__ import annotations

import pickle
import re
import time
import urllib.request
import uuid

import numpy as np
import pytest

from raysplit.observability import metrics as m
from raysplit.observability.metrics import METRICS, MetricSpec, Recorder, exported_names, prometheus_names

EXPECTED = {
    "raysplit_bytes_up": ("counter", ("tenant", "client")),
    "raysplit_bytes_down": ("counter", ("tenant", "client")),
    "raysplit_samples": ("counter", ("tenant", "client")),
    "raysplit_step_latency_seconds": ("histogram", ("tenant", "client")),
    "raysplit_budget": ("gauge", ("tenant", "client")),
    "raysplit_train_loss": ("gauge", ("tenant", "client")),
    "raysplit_test_accuracy": ("gauge", ("tenant", "client")),
    "raysplit_shard_queue_depth": ("gauge", ("tenant", "shard")),
    "raysplit_shard_batch_size": ("histogram", ("tenant", "shard")),
    "raysplit_budget_transitions": ("counter", ("tenant",)),
    "raysplit_link_up_seconds": ("counter", ("tenant", "client")),
    "raysplit_link_down_seconds": ("counter", ("tenant", "client")),
    "raysplit_wire_bytes_up": ("counter", ("tenant", "client")),
    "raysplit_wire_bytes_down": ("counter", ("tenant", "client")),
    "raysplit_sim_time_seconds": ("gauge", ("tenant", "client")),
    "raysplit_medium_utilization": ("gauge", ("tenant", "medium")),
    "raysplit_failures": ("counter", ("tenant", "component", "decision")),
    "raysplit_recovery_seconds": ("histogram", ("tenant", "component")),
    "raysplit_rejected_messages": ("counter", ("tenant", "shard", "reason")),
    "raysplit_duplicate_steps": ("counter", ("tenant", "shard")),
    "raysplit_nonfinite_steps": ("counter", ("tenant", "client", "where", "action")),
}

_NAME_RE = re.compile(r"^raysplit_[a-z][a-z0-9_]*$")


# --------------------------------------------------------------------------- spec


def test_spec_is_exactly_the_documented_set():
    assert {s.name: (s.kind, s.tag_keys) for s in METRICS} == EXPECTED


def test_spec_names_unique_prefixed_and_kinds_valid():
    names = [s.name for s in METRICS]
    assert len(names) == len(set(names))
    for s in METRICS:
        assert isinstance(s, MetricSpec)
        assert _NAME_RE.match(s.name), s.name
        assert s.kind in m.KINDS
        assert s.description.strip()
        assert isinstance(s.tag_keys, tuple)
        assert all(isinstance(k, str) and re.match(r"^[a-z_]+$", k) for k in s.tag_keys)


def test_histogram_boundaries():
    for s in METRICS:
        if s.kind == "histogram":
            b = s.boundaries
            assert b, s.name
            assert all(x > 0 for x in b), "Ray rejects boundaries <= 0"
            assert list(b) == sorted(set(b)), "boundaries must be strictly increasing"
        else:
            assert s.boundaries == (), s.name
    lat = m.by_name("raysplit_step_latency_seconds").boundaries
    assert lat[0] <= 0.001 and lat[-1] >= 10.0  # 1 ms .. 10 s
    assert len(lat) >= 8


def test_prometheus_names():
    assert prometheus_names(m.by_name("raysplit_bytes_up")) == ("ray_raysplit_bytes_up_total",)
    assert prometheus_names("raysplit_budget") == ("ray_raysplit_budget",)
    assert prometheus_names("raysplit_step_latency_seconds") == (
        "ray_raysplit_step_latency_seconds_bucket",
        "ray_raysplit_step_latency_seconds_sum",
        "ray_raysplit_step_latency_seconds_count",
    )
    assert prometheus_names("raysplit_budget_transitions") == (
        "ray_raysplit_budget_transitions_total",
    )
    with pytest.raises(ValueError):
        prometheus_names(MetricSpec("raysplit_x", "summary", "d", ()))


def test_exported_names_do_not_collide():
    all_names = [n for s in METRICS for n in prometheus_names(s)]
    assert len(all_names) == len(set(all_names))
    assert set(exported_names()) == set(all_names)


def test_real_ray_metric_objects_build_from_every_spec(monkeypatch):
    """ray.util.metrics accepts every spec (names, tag keys, boundaries); no Ray needed."""
    monkeypatch.setattr(m, "_OBJECTS", {})
    import ray.util.metrics as rm

    cls = {"counter": rm.Counter, "gauge": rm.Gauge, "histogram": rm.Histogram}
    for s in METRICS:
        obj = m._metric_object(s)
        assert isinstance(obj, cls[s.kind])
        assert obj.info["tag_keys"] == s.tag_keys
        assert m._metric_object(s) is obj  # cached per process


# --------------------------------------------------------------------------- Recorder


class _Fake:
    def __init__(self, spec, log):
        self.spec, self.log = spec, log

    def _rec(self, op, value, tags):
        assert isinstance(value, (int, float)) and not isinstance(value, np.generic)
        assert all(isinstance(v, str) for v in tags.values())
        assert tuple(sorted(tags)) == tuple(sorted(self.spec.tag_keys)), self.spec.name
        self.log.append((self.spec.name, op, value, dict(tags)))

    def inc(self, value, tags=None):
        assert value > 0  # Ray raises on <= 0
        self._rec("inc", value, tags or {})

    def set(self, value, tags=None):
        self._rec("set", value, tags or {})

    def observe(self, value, tags=None):
        self._rec("observe", value, tags or {})


@pytest.fixture
def fake_log(monkeypatch):
    log: list = []
    monkeypatch.setattr(m, "_metric_object", lambda spec: _Fake(spec, log))
    return log


def _exercise(rec: Recorder) -> None:
    rec.step("c0", tenant="t", bytes_up=1129, bytes_down=0, samples=16, latency_s=0.05, loss=2.3)
    rec.budget("c0", 4, tenant="t")
    rec.accuracy("c0", 0.5, tenant="t")
    rec.queue_depth("s0", 0, tenant="t")
    rec.shard_batch("s0", 3, tenant="t")
    rec.transition(tenant="t")
    rec.link("c0", tenant="t", uplink_s=0.12, downlink_s=0.1, wire_up=1207, wire_down=1103, sim_time=3.5)
    rec.medium_utilization("cell:wifi", 0.8, tenant="t")
    rec.failure("client", "restart", tenant="t")
    rec.recovery("shard", 2.5, tenant="t")
    rec.rejected("s0", "oversized", tenant="t")
    rec.duplicate("s0", tenant="t")
    rec.nonfinite("c0", "loss", "skip", tenant="t")


def test_disabled_recorder_is_a_noop(monkeypatch):
    def boom(spec):  # any metric creation would be a bug
        raise AssertionError(f"created {spec.name} while disabled")

    monkeypatch.setattr(m, "_metric_object", boom)
    rec = Recorder(enabled=False)
    assert rec.enabled is False
    _exercise(rec)
    rec.step("c0", tenant="t", bytes_up=-1, bytes_down=-1, samples=0, latency_s=-1.0, loss=float("nan"))


def test_recorder_defaults_to_disabled_outside_ray(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session is open in this process")
    monkeypatch.setattr(m, "_metric_object", lambda spec: pytest.fail("recorded outside Ray"))
    rec = Recorder()
    assert rec.enabled is False
    _exercise(rec)


def test_enabled_recorder_records_every_metric_with_its_tags(fake_log):
    rec = Recorder(enabled=True)
    _exercise(rec)
    # numpy scalars are converted to Python numbers before they reach Ray
    rec.step("c1", tenant="t", bytes_up=np.int64(10), bytes_down=np.int32(7), samples=np.int64(2),
             latency_s=np.float32(0.25), loss=np.float64(1.5))
    got = {(name, op) for name, op, _, _ in fake_log}
    ops = {"counter": "inc", "gauge": "set", "histogram": "observe"}
    assert got == {(s.name, ops[s.kind]) for s in METRICS}
    # zero increments are skipped (Ray's Counter.inc raises on 0): bytes_down=0 for c0
    assert [v for n, _, v, t in fake_log if n == "raysplit_bytes_down"] == [7]
    assert ("raysplit_bytes_up", "inc", 1129, {"tenant": "t", "client": "c0"}) in fake_log
    assert ("raysplit_shard_batch_size", "observe", 3, {"tenant": "t", "shard": "s0"}) in fake_log
    assert ("raysplit_budget_transitions", "inc", 1, {"tenant": "t"}) in fake_log
    assert ("raysplit_step_latency_seconds", "observe", 0.25, {"tenant": "t", "client": "c1"}) in fake_log


def test_enabled_recorder_rejects_negative_counts(fake_log):
    with pytest.raises(ValueError):
        Recorder(enabled=True).step("c0", tenant="t", bytes_up=-5, bytes_down=1, samples=1,
                                    latency_s=0.1, loss=0.0)


def test_recorder_pickles_as_its_flag():
    for flag in (True, False):
        rec = pickle.loads(pickle.dumps(Recorder(enabled=flag)))
        assert rec.enabled is flag


# --------------------------------------------------------------------------- real Ray


def _scrape(port: int) -> dict[str, list[tuple[dict, float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("ray_raysplit_"):
                out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _value(samples, name, **labels) -> float:
    hits = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert hits, f"no {name} with {labels}: {samples.get(name)}"
    return sum(hits)


def _midpoint(bounds, v) -> float:
    """Where Ray 2.60's agent puts an observation v when it rebuilds _sum."""
    lo = 0.0
    for b in bounds:
        if v <= b:
            return (lo + b) / 2
        lo = b
    return 2 * bounds[-1]


@pytest.mark.slow
def test_metrics_reach_the_prometheus_endpoint():
    """Every exported name appears on the node's endpoint, with our tags and values."""
    import ray

    started = not ray.is_initialized()
    if started:
        # The metrics agent runs without the dashboard: include_dashboard=False works.
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tag = uuid.uuid4().hex[:8]
        client, shard, drv = f"c-{tag}", f"s-{tag}", f"drv-{tag}"

        @ray.remote(num_cpus=0)
        class Worker:
            def run(self, client, shard):
                rec = Recorder()  # inside an actor: enabled automatically
                assert rec.enabled
                rec.step(client, tenant="acme", bytes_up=1000, bytes_down=500, samples=16,
                         latency_s=0.02, loss=1.25)
                rec.step(client, tenant="acme", bytes_up=129, bytes_down=0, samples=16,
                         latency_s=0.3, loss=1.0)
                rec.budget(client, 4, tenant="acme")
                rec.accuracy(client, 0.75, tenant="acme")
                rec.queue_depth(shard, 3, tenant="acme")
                rec.shard_batch(shard, 2, tenant="acme")
                rec.transition(tenant="acme")
                rec.link(client, tenant="acme", uplink_s=0.5, downlink_s=0.25, wire_up=1207, wire_down=600,
                         sim_time=4.0)
                rec.medium_utilization("cell:wifi", 0.5, tenant="acme")
                rec.failure("client", "restart", tenant="acme")
                rec.recovery("client", 1.5, tenant="acme")
                rec.rejected(shard, "bad_tag", tenant="acme")
                rec.duplicate(shard, tenant="acme")
                rec.nonfinite(client, "loss", "skip", tenant="acme")
                return True

        w = Worker.remote()
        assert ray.get(w.run.remote(client, shard))
        driver_rec = Recorder()
        assert driver_rec.enabled
        driver_rec.step(drv, tenant="acme", bytes_up=7, bytes_down=3, samples=1, latency_s=0.004, loss=0.5)

        node = next(n for n in ray.nodes() if n["Alive"])
        port = node["MetricsExportPort"]
        expected = set(exported_names())
        t0 = time.monotonic()
        samples: dict = {}
        while time.monotonic() - t0 < 60:
            try:
                samples = _scrape(port)
            except OSError:
                samples = {}
            ready = expected <= set(samples) and any(
                lab.get("client") == drv for lab, _ in samples.get("ray_raysplit_bytes_up_total", [])
            ) and any(
                lab.get("client") == client for lab, _ in samples.get("ray_raysplit_budget", [])
            )
            if ready:
                break
            time.sleep(1.0)
        elapsed = time.monotonic() - t0
        missing = expected - set(samples)
        assert not missing, f"not exported after {elapsed:.0f}s: {sorted(missing)}"
        # No other raysplit series (e.g. no bare counter-as-gauge on the OTel path).
        assert set(samples) == expected, sorted(set(samples) - expected)

        up = "ray_raysplit_bytes_up_total"
        assert _value(samples, up, client=client) == 1129
        assert _value(samples, up, client=drv) == 7
        assert _value(samples, "ray_raysplit_bytes_down_total", client=client) == 500
        assert _value(samples, "ray_raysplit_samples_total", client=client) == 32
        assert _value(samples, "ray_raysplit_budget", client=client) == 4
        assert _value(samples, "ray_raysplit_test_accuracy", client=client) == 0.75
        assert _value(samples, "ray_raysplit_train_loss", client=client) == 1.0
        assert _value(samples, "ray_raysplit_shard_queue_depth", shard=shard) == 3
        assert _value(samples, "ray_raysplit_budget_transitions_total") >= 1
        lat = "ray_raysplit_step_latency_seconds"
        assert _value(samples, lat + "_count", client=client) == 2
        # Ray quirk: _sum replays each observation at its bucket midpoint, so it is
        # mid(0.01, 0.025) + mid(0.25, 0.5) = 0.3925, not 0.02 + 0.3.
        bounds = m.by_name("raysplit_step_latency_seconds").boundaries
        assert _value(samples, lat + "_sum", client=client) == pytest.approx(
            _midpoint(bounds, 0.02) + _midpoint(bounds, 0.3))
        # cumulative buckets: 0.02 s falls in le=0.025, 0.3 s in le=0.5
        assert _value(samples, lat + "_bucket", client=client, le="0.025") == 1
        assert _value(samples, lat + "_bucket", client=client, le="0.5") == 2
        assert _value(samples, lat + "_bucket", client=client, le="+Inf") == 2
        assert _value(samples, "ray_raysplit_shard_batch_size_count", shard=shard) == 1
        # Ray adds its own labels; the dashboard filters on SessionName.
        labels = next(lab for lab, _ in samples[up] if lab.get("client") == client)
        assert {"SessionName", "WorkerId", "NodeAddress"} <= set(labels) and labels["tenant"] == "acme"
        print(f"raysplit metrics visible after {elapsed:.1f}s")
    finally:
        if started:
            ray.shutdown()
