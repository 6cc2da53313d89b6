"""raysplit.monitor without a Ray cluster: the generated Prometheus config really
discovers and scrapes targets through a service-discovery file, the process stops (even
when the monitor is killed), only one temp dir's Ray processes are stopped, the queries
parse, and the command line refuses bad values. The end-to-end run with Ray, a job and a
browser is in test_browser.py."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest

from raysplit.monitor import Prometheus, dashboard_env, graph_url, main_queries, prometheus_config, ray_processes, stop_head
from raysplit.monitor import queries as q
from raysplit.monitor.__main__ import main as monitor_main
from raysplit.observability.metrics import METRICS, MetricSpec, exported_names

ROOT = Path(__file__).resolve().parents[1]
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="prometheus not installed (make setup installs Debian's package)")


def gone(pid: int, timeout: float = 15.0) -> bool:
    """The process has exited (a zombie not yet reaped by its new parent counts as exited)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- queries


def test_main_queries_cover_the_issue_and_name_real_series():
    qs = {x.key: x for x in main_queries()}
    assert {"throughput", "bytes_up", "bytes_down", "budget", "latency_p50", "latency_p95", "queue_depth"} <= set(qs)
    exported = exported_names()
    for x in qs.values():
        names = re.findall(r"ray_raysplit_[a-z_]+", x.expr)
        assert names and all(n in exported for n in names), x.expr
    assert "by (tenant, client)" in qs["bytes_up"].expr and "by (tenant, client)" in qs["budget"].expr
    assert qs["latency_p95"].expr.startswith("histogram_quantile(0.95,")


def test_link_metrics_get_graphs_once_they_exist(monkeypatch):
    link = (MetricSpec("raysplit_link_uplink_seconds", "histogram", "Simulated uplink time per message.",
                       ("tenant", "client"), (0.01, 0.1, 1.0)),
            MetricSpec("raysplit_link_capacity_mbps", "gauge", "Link capacity now.", ("tenant", "client")),
            MetricSpec("raysplit_link_bytes", "counter", "Bytes on the emulated wire.", ("tenant", "client")))
    assert not [x for x in main_queries() if "link" in x.key] or any("link" in m.name for m in METRICS)
    monkeypatch.setattr(q, "METRICS", METRICS + link)
    import raysplit.observability.metrics as m

    monkeypatch.setattr(m, "_BY_NAME", {s.name: s for s in METRICS + link})
    keys = {x.key: x.expr for x in main_queries()}
    assert keys["link_uplink_seconds_p95"] == ("histogram_quantile(0.95, sum by (tenant, client, le) "
                                               "(rate(ray_raysplit_link_uplink_seconds_bucket[1m])))")
    assert keys["link_capacity_mbps"] == "max by (tenant, client) (ray_raysplit_link_capacity_mbps)"
    assert keys["link_bytes"] == "sum by (tenant, client) (rate(ray_raysplit_link_bytes_total[1m]))"


def test_graph_url_opens_every_query_as_a_graph():
    exprs = [x.expr for x in main_queries()]
    url = graph_url("http://127.0.0.1:9090/", exprs)
    parsed = urllib.parse.urlsplit(url)
    assert parsed.path == "/graph"
    params = urllib.parse.parse_qs(parsed.query)
    assert [params[f"g{i}.expr"][0] for i in range(len(exprs))] == exprs
    assert all(params[f"g{i}.tab"] == ["0"] for i in range(len(exprs)))  # 0 = graph, 1 = table


@needs_prometheus
def test_promtool_accepts_the_config_and_every_query(tmp_path):
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(json.dumps(prometheus_config(tmp_path / "ray", "5s")))
    r = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = tmp_path / "rules.yml"
    rules.write_text(json.dumps({"groups": [{"name": "monitor", "rules": [
        {"record": f"raysplit:monitor_{x.key}", "expr": x.expr} for x in main_queries()]}]}))
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"{len(main_queries())} rules found" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------- Prometheus process


class Exporter(http.server.BaseHTTPRequestHandler):
    """A metrics endpoint in Prometheus text format (what a Ray node exports)."""

    def do_GET(self):  # noqa: N802
        body = b"# TYPE ray_raysplit_samples_total counter\nray_raysplit_samples_total{tenant=\"t\"} 42\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@needs_prometheus
def test_prometheus_follows_the_service_discovery_file_and_stops(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ray_tmp = tmp_path / "ray"
    session = ray_tmp / "session_1"
    session.mkdir(parents=True)
    prom = Prometheus(tmp_path / "mon", ray_tmp, port=free_port(), scrape_interval="1s")
    try:
        prom.start()  # before Ray wrote the file: Prometheus waits for it
        assert prom.targets() == []
        # What Ray does: the file in the session dir, a link to it in the temp dir.
        (session / "prom_metrics_service_discovery.json").write_text(json.dumps(
            [{"labels": {"job": "ray"}, "targets": [f"127.0.0.1:{srv.server_address[1]}"]}]))
        os.symlink(session / "prom_metrics_service_discovery.json", ray_tmp / "prom_metrics_service_discovery.json")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            res = prom.query("ray_raysplit_samples_total")
            if res:
                break
            time.sleep(0.5)
        assert res and res[0]["value"][1] == "42" and res[0]["metric"]["job"] == "ray"
        assert [t["health"] for t in prom.targets()] == ["up"]
    finally:
        pid = prom.proc.pid if prom.proc else None
        prom.stop()
        srv.shutdown()
    assert pid is not None and gone(pid, 1)


@needs_prometheus
def test_prometheus_dies_with_a_killed_monitor(tmp_path):
    """Even `kill -9` of the monitor leaves no Prometheus behind (PR_SET_PDEATHSIG)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from raysplit.monitor import Prometheus\n"
            f"p = Prometheus({str(tmp_path / 'mon')!r}, {str(tmp_path / 'ray')!r}, port={free_port()})\n"
            "p.start(); print(p.proc.pid, flush=True)\nimport time; time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(child.stdout.readline())
        assert psutil.Process(pid).name().startswith("prometheus")
        child.kill()
        child.wait(10)
        assert gone(pid)
    finally:
        child.kill()


def test_a_taken_port_is_refused_clearly(tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (make setup installs Debian's package)")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} is in use .*pass another --prometheus-port"):
            Prometheus(tmp_path, tmp_path, port=port).start()


def test_missing_prometheus_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install prometheus"):
        Prometheus(tmp_path, tmp_path)


# --------------------------------------------------------------------------- Ray processes


def test_only_the_processes_of_one_temp_dir_are_stopped(tmp_path):
    mine, other = tmp_path / "rs-a", tmp_path / "rs-ab"
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    a = subprocess.Popen([sys.executable, "-c", sleeper, f"--temp-dir={mine}"])
    b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--temp-dir={other}"])
    c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--log_dir={mine}/session_x/logs"])
    try:
        t0 = time.monotonic()
        while len(psutil.Process(a.pid).children()) < 1 and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        found = {p.pid for p in ray_processes(mine)}
        child = psutil.Process(a.pid).children()[0].pid
        assert found == {a.pid, c.pid, child}
        assert stop_head(mine, timeout=5) == 3
        assert gone(a.pid) and gone(c.pid) and gone(child)
        assert b.poll() is None  # another instance's process is left alone
        assert ray_processes(mine) == []
    finally:
        for p in (a, b, c):
            p.kill()


# --------------------------------------------------------------------------- command line


def test_dashboard_env_is_what_ray_start_needs():
    env = dashboard_env("http://127.0.0.1:9090")
    assert env == {"RAY_PROMETHEUS_HOST": "http://127.0.0.1:9090", "RAY_PROMETHEUS_NAME": "Prometheus"}
    env = dashboard_env("http://p:9090", "http://g:3000", "https://grafana.example", "Prom")
    assert env["RAY_GRAFANA_HOST"] == "http://g:3000" and env["RAY_GRAFANA_IFRAME_HOST"] == "https://grafana.example"
    assert env["RAY_GRAFANA_DATA_DASHBOARD_UID"] == "raysplit" and env["RAY_PROMETHEUS_NAME"] == "Prom"
    assert "RAY_GRAFANA_DATA_DASHBOARD_UID" not in dashboard_env("http://p", "http://g", raysplit_tab=False)
    committed = json.loads((ROOT / "dashboards" / "raysplit.json").read_text())
    assert committed["uid"] == "raysplit"  # the uid the Ray dashboard's tab is pointed at


def test_env_command_prints_exports(capsys):
    assert monitor_main(["env", "--prometheus-port", "9191", "--grafana-url", "http://g:3000"]) == 0
    out = capsys.readouterr().out
    assert "export RAY_PROMETHEUS_HOST=http://127.0.0.1:9191\n" in out and "export RAY_GRAFANA_HOST=http://g:3000" in out
    r = subprocess.run(["bash", "-c", f"eval \"$({sys.executable} -m raysplit.monitor env)\"; echo $RAY_PROMETHEUS_HOST"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.strip() == "http://127.0.0.1:9090"


@pytest.mark.parametrize("args, message", [
    (["--scrape-interval", "5"], "--scrape-interval: '5' is not a duration like 1s, 500ms or 1m"),
    (["--prometheus-port", "70000"], "--prometheus-port: 70000 is not a port (1-65535)"),
    (["--dashboard-port", "9000", "--prometheus-port", "9000"], "--dashboard-port and --prometheus-port are both 9000"),
    (["--ray", "sometimes"], "argument --ray: invalid choice: 'sometimes'"),
])
def test_bad_options_are_refused_clearly(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        monitor_main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_ray_start_options_the_monitor_owns_are_refused(tmp_path):
    from raysplit.monitor.ray_head import start_head

    with pytest.raises(ValueError, match="give --temp-dir to the monitor"):
        start_head(tmp_path, "127.0.0.1", 8265, ["--temp-dir=/tmp/x"], {})
