"""tools/dashboards.py: the committed Grafana JSON, its queries and its shape.

Fast tests check the committed file against the generator and every PromQL
expression against the metric spec. Two optional checks use Debian's
``prometheus`` package when it is installed (skipped otherwise): ``promtool``
parses every expression, and a slow test runs a real Prometheus against a
local Ray and evaluates every panel query on live raysplit metrics.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from raysplit.observability.metrics import METRICS, exported_names

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import dashboards as d  # noqa: E402  (tools/dashboards.py: a script, not part of the package)
COMMITTED = ROOT / "dashboards" / "raysplit.json"
TOKEN_RE = re.compile(r"\bray_raysplit_[a-z_]+")
VAR_RE = re.compile(r"\$(\w+)")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__all"}


@pytest.fixture(scope="module")
def dash() -> dict:
    return d.build_dashboard()


def _panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows (none today)


def _exprs(dash):
    for p in _panels(dash):
        for t in p.get("targets", []):
            yield p, t["expr"]


def _variables(dash) -> dict[str, dict]:
    return {v["name"]: v for v in dash["templating"]["list"]}


def _variable_queries(dash):
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            yield v, v["query"]["query"]


# --------------------------------------------------------------------------- drift


def test_committed_json_matches_generator():
    assert COMMITTED.exists(), "run: python tools/dashboards.py --out dashboards/raysplit.json"
    assert COMMITTED.read_text(encoding="utf-8") == d.render(), (
        "dashboards/raysplit.json drifted; run: "
        "python tools/dashboards.py --out dashboards/raysplit.json"
    )


def test_render_is_deterministic_and_valid_json():
    a, b = d.render(), d.render()
    assert a == b and a.endswith("\n")
    assert json.loads(a) == d.build_dashboard()


def test_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "sub" / "dash.json"
    assert d.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == d.render()
    assert d.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("raysplit", "raysplat", 1))
    assert d.main(["--check", "--out", str(out)]) == 1
    assert d.main([]) == 0
    assert json.loads(capsys.readouterr().out)["uid"] == d.DASHBOARD_UID


# --------------------------------------------------------------------------- queries


def test_every_expr_names_real_exported_series_and_covers_every_metric(dash):
    exported = exported_names()
    used_specs = set()
    n = 0
    for panel, expr in _exprs(dash):
        n += 1
        tokens = TOKEN_RE.findall(expr)
        assert tokens, f"{panel['title']}: no raysplit series in {expr}"
        for tok in tokens:
            assert tok in exported, f"{panel['title']}: {tok} is not an exported series"
            used_specs.add(exported[tok].name)
    assert n >= 10
    assert used_specs == {m.name for m in METRICS}, (
        f"metrics without a panel: {sorted({m.name for m in METRICS} - used_specs)}"
    )
    for _, q in _variable_queries(dash):
        for tok in TOKEN_RE.findall(q):
            assert tok in exported


def test_promql_hygiene(dash):
    exported = exported_names()
    for panel, expr in _exprs(dash):
        assert expr.count("(") == expr.count(")"), expr
        assert expr.count("{") == expr.count("}"), expr
        assert expr.count("[") == expr.count("]"), expr
        # rate() only over counters and histogram parts, never gauges
        for tok in re.findall(r"rate\((ray_raysplit_[a-z_]+)", expr):
            assert exported[tok].kind != "gauge", f"rate over gauge {tok}"
        # quantiles only over _bucket series, grouped by le
        if "histogram_quantile" in expr:
            assert re.search(r"_bucket\{", expr) and re.search(r"by \((\w+, )?le\)", expr), expr
        # counters are never read bare by their gauge-style name
        for tok in TOKEN_RE.findall(expr):
            spec = exported[tok]
            if spec.kind == "counter":
                assert tok.endswith("_total")
        # every selector filters on the session; per-client series on the Client variable
        for tok, sel in re.findall(r"(ray_raysplit_[a-z_]+)\{([^}]*)\}", expr):
            assert 'SessionName=~"$SessionName"' in sel, expr
            if "client" in exported[tok].tag_keys:
                assert 'client=~"$Client"' in sel, expr
        assert len(re.findall(r"ray_raysplit_[a-z_]+\{", expr)) == len(TOKEN_RE.findall(expr)), (
            f"unfiltered selector in {expr}"
        )


def test_every_variable_used_is_defined(dash):
    defined = set(_variables(dash))
    for panel, expr in _exprs(dash):
        for var in VAR_RE.findall(expr):
            assert var in defined or var in GRAFANA_BUILTINS, f"${var} undefined in {expr}"
    for v, q in _variable_queries(dash):
        for var in VAR_RE.findall(q):
            assert var in defined and var != v["name"], (v["name"], var)


REQUIRED_PANELS = {
    "bytes up rate": ("raysplit_bytes_up", "rate("),
    "bytes down rate": ("raysplit_bytes_down", "rate("),
    "cumulative bytes": ("raysplit_bytes_up", None),
    "samples/s": ("raysplit_samples", "rate("),
    "latency p50": ("raysplit_step_latency_seconds", "histogram_quantile(0.5,"),
    "latency p95": ("raysplit_step_latency_seconds", "histogram_quantile(0.95,"),
    "budget": ("raysplit_budget", None),
    "loss": ("raysplit_train_loss", None),
    "accuracy": ("raysplit_test_accuracy", None),
    "queue depth": ("raysplit_shard_queue_depth", None),
    "batch size": ("raysplit_shard_batch_size", None),
    "transitions": ("raysplit_budget_transitions", None),
    "link time": ("raysplit_link_up_seconds", None),
    "medium utilisation": ("raysplit_medium_utilization", None),
}


@pytest.mark.parametrize("what", sorted(REQUIRED_PANELS))
def test_required_panel_present(dash, what):
    metric, fn = REQUIRED_PANELS[what]
    hits = [
        p["title"]
        for p, expr in _exprs(dash)
        if f"ray_{metric}" in expr and (fn is None or fn in expr)
    ]
    assert hits, f"no panel for {what}"


def test_per_client_and_total_throughput(dash):
    legends = {
        (p["title"], t["legendFormat"]) for p in _panels(dash) for t in p.get("targets", [])
    }
    for title in ("Bytes up rate per client", "Bytes down rate per client", "Samples/s per client"):
        assert (title, "{{client}}") in legends and (title, "total") in legends, title


# --------------------------------------------------------------------------- Grafana shape


def test_datasource_convention(dash):
    ds = _variables(dash)["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for p in _panels(dash):
        assert p["datasource"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t.get("datasource", "${datasource}") == "${datasource}"
    for v, _ in _variable_queries(dash):
        assert v["datasource"] == "${datasource}"
    sess = _variables(dash)["SessionName"]
    assert sess["type"] == "query" and sess["includeAll"] and sess["allValue"] == ".*"


def test_grafana_shape(dash):
    for key in ("uid", "title", "panels", "templating", "time", "schemaVersion", "annotations"):
        assert key in dash
    assert isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in _panels(dash)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in _panels(dash):
        assert p["type"] in {"timeseries", "stat"}
        assert p["title"] and isinstance(p["description"], str)
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in g.values())
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (cells & mine), f"{p['title']} overlaps another panel"
        cells |= mine
        assert isinstance(p["fieldConfig"]["defaults"]["unit"], str)
        targets = p["targets"]
        assert targets
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids))
        for t in targets:
            assert t["expr"].strip() and isinstance(t["legendFormat"], str)


# --------------------------------------------------------------------------- real Prometheus


def _concrete(expr: str, session: str = ".*", rate_interval: str = "1m") -> str:
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$SessionName", session)
        .replace("$Client", ".*")
    )


def test_promtool_parses_every_expr(dash, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    rules = [
        {"record": f"raysplit:check_{i}", "expr": _concrete(expr)}
        for i, (_, expr) in enumerate(_exprs(dash))
    ]
    f = tmp_path / "rules.yml"
    f.write_text(json.dumps({"groups": [{"name": "raysplit_dashboard", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(rules)} rules found" in r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prom_get(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read().decode())
    assert body["status"] == "success", body
    return body["data"]


def _label_values_call(q: str) -> tuple[str, str]:
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", q)
    assert m, q
    return m.group(1), m.group(2)


@pytest.mark.slow
def test_every_panel_query_returns_data_from_real_prometheus(dash, tmp_path):
    """Ray -> real Prometheus -> every dashboard query and variable query."""
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    import ray

    from raysplit.observability.metrics import Recorder

    started = not ray.is_initialized()
    if started:
        # 1 s metric reports instead of Ray's default 10 s keep this test short.
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 _system_config={"metrics_report_interval_ms": 1000})
    proc = None
    try:
        node = next(n for n in ray.nodes() if n["Alive"])
        target = f"127.0.0.1:{node['MetricsExportPort']}"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [target]}]}],
        }))
        log = open(tmp_path / "prometheus.log", "w")
        proc = subprocess.Popen(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        tag = uuid.uuid4().hex[:6]
        clients, shards = [f"c{i}-{tag}" for i in range(2)], [f"s0-{tag}"]
        rec = Recorder()
        assert rec.enabled
        tenant = f"t-{tag}"
        rec.transition(tenant=tenant)
        exprs = list(_exprs(dash))
        pending = {e for _, e in exprs}
        session = None
        t0 = time.monotonic()
        step = 0
        while time.monotonic() - t0 < 90 and (pending or session is None):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            step += 1
            for i, c in enumerate(clients):
                rec.step(c, bytes_up=1000 + i, bytes_down=500, samples=16,
                         latency_s=0.01 * (1 + step % 5), loss=1.0 / step, tenant=tenant)
                rec.budget(c, 4 if step < 10 else 128, tenant=tenant)
                rec.accuracy(c, min(1.0, 0.05 * step), tenant=tenant)
            rec.queue_depth(shards[0], step % 3, tenant=tenant)
            rec.shard_batch(shards[0], 1 + step % 4, tenant=tenant)
            for c in clients:
                rec.link(c, tenant=tenant, uplink_s=0.1, downlink_s=0.05, wire_up=1100, wire_down=550,
                         sim_time=0.2 * step)
            rec.medium_utilization("cell:wifi", 0.5, tenant=tenant)
            # The reliability panels (issue 11) read these; a healthy run leaves them at 0.
            rec.failure("client", "restart", tenant=tenant)
            rec.recovery("client", 0.5 + 0.1 * (step % 3), tenant=tenant)
            rec.rejected(shards[0], "bad_tag", tenant=tenant)
            rec.duplicate(shards[0], tenant=tenant)
            rec.nonfinite(clients[0], "loss", "skip", tenant=tenant)
            time.sleep(0.5)
            if step % 2:
                continue
            try:
                if session is None:
                    vals = _prom_get(base, "/api/v1/label/SessionName/values",
                                     **{"match[]": "ray_raysplit_samples_total"})
                    session = vals[0] if vals else None
                    continue
                for expr in sorted(pending):
                    res = _prom_get(base, "/api/v1/query",
                                    query=_concrete(expr, session, "10s"))["result"]
                    if any(math.isfinite(float(r["value"][1])) for r in res):
                        pending.discard(expr)
            except OSError:
                continue  # Prometheus still starting
        elapsed = time.monotonic() - t0
        assert session is not None, "SessionName label never reached Prometheus"
        assert not pending, f"no finite data after {elapsed:.0f}s for: {sorted(pending)}"

        # The templating variables resolve too (Grafana's label_values(sel, label)).
        for v, q in _variable_queries(dash):
            selector, label = _label_values_call(_concrete(q, session))
            vals = _prom_get(base, f"/api/v1/label/{label}/values", **{"match[]": selector})
            assert vals, (v["name"], q)
            if label == "client":
                assert set(clients) <= set(vals)
        # Per-client panels really split by client.
        per_client = _prom_get(base, "/api/v1/query", query=_concrete(
            next(e for p, e in exprs if p["title"] == "Bytes up rate per client"), session, "10s"))
        assert {r["metric"].get("client") for r in per_client["result"]} >= set(clients)
        print(f"all {len(exprs)} dashboard queries returned data after {elapsed:.1f}s")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started:
            ray.shutdown()
