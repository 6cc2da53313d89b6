"""What a person sees, checked in a real browser (Debian's headless Chromium, driven by
Selenium through Debian's chromedriver):

* a run's report.html renders its tables and images (fast: a local run on digits);
* during a job submitted to a Ray head that ``python -m raysplit.monitor`` started (token
  authentication on), the Ray dashboard's Jobs page shows the job after the token
  dialog, the Prometheus graph of the raysplit throughput query shows the job's data,
  and the dashboard's Metrics page embeds raysplit's Grafana dashboard; Ctrl-C then
  leaves no Prometheus and no Ray process of that head behind (slow).

Screenshots go to ``test-artifacts/browser/`` (``RAYSPLIT_TEST_ARTIFACTS`` moves it);
with ``RAYSPLIT_SCREENSHOTS_TO_DOCS=1`` they also replace the ones under ``docs/`` that
the README shows. Without Chromium, chromedriver or Selenium the tests skip and say so
(``make test`` installs all three).
"""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from raysplit import local
from raysplit.monitor import Dashboard, Prometheus, ray_processes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARTIFACTS = Path(os.environ.get("RAYSPLIT_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900")


def _missing() -> str | None:
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} not installed (make setup installs Debian's chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")  # a fresh profile each test
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver, name: str, height: int | None = None) -> Path:
    """Save a screenshot (the page's first ``height`` pixels, or the window) as an artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if height:
        driver.set_window_size(1280, height)
        time.sleep(0.3)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("RAYSPLIT_SCREENSHOTS_TO_DOCS") == "1":
        shutil.copy(path, ROOT / "docs" / path.name)
    return path


def wait(what: str, check, timeout: float = 60.0, every: float = 0.5):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            got = check()
            if got:
                return got
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - pages and servers come up while we poll
            last = e
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last!r})" if last else ""))


def check_report_page(driver, path: Path, n_images: int) -> None:
    driver.get(path.as_uri())
    assert driver.title.startswith("raysplit run ")
    imgs = driver.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight, "
        "i.getBoundingClientRect().width, i.alt])")
    assert len(imgs) == n_images, imgs
    for complete, nw, nh, shown, alt in imgs:
        assert complete and nw > 300 and nh > 150 and shown > 300, (alt, nw, nh, shown)
    tables = driver.execute_script(
        "return [...document.querySelectorAll('table')].map(t => [t.rows.length, t.getBoundingClientRect().height])")
    assert len(tables) >= 6 and all(rows >= 2 and h > 20 for rows, h in tables), tables
    text = driver.find_element("tag name", "body").text
    for heading in ("Summary", "Accuracy", "Traffic", "Step latency", "Budget transitions", "Configuration"):
        assert heading in text
    assert "final test accuracy" in text
    # nothing was fetched: images are data: URIs and there is no other resource
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
    assert fetched == []


def test_report_renders_in_chromium(browser, tmp_path):
    out = tmp_path / "run"
    local.main(["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "8",
                "--test-subset", "128", "--threads", "1", "--no-progress", "--method", "deprune", "--budgets",
                "4,128", "--epochs-per-budget", "2,1", "--out", str(out)])
    check_report_page(browser, out / "report.html", 5)
    shoot(browser, "report", height=1900)


# --------------------------------------------------------------------------- a live job


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class GrafanaHealth(http.server.BaseHTTPRequestHandler):
    """Grafana's health endpoint only (Grafana's server cannot be installed here): enough
    for the Ray dashboard to decide that Grafana runs and to embed it by URL."""

    def do_GET(self):  # noqa: N802
        ok = self.path.startswith("/api/health")
        body = json.dumps({"database": "ok", "version": "test"} if ok else {"message": "not found"}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


# Runs a monitor with --ray attach until it is ready, then Ctrl-C; prints its output.
ATTACH_AND_STOP = """
import signal, subprocess, sys, time
temp, dash_port, prom_port, data = sys.argv[1:]
m = subprocess.Popen([sys.executable, "-m", "raysplit.monitor", "--ray", "attach", "--ray-temp-dir", temp,
                      "--dashboard-port", dash_port, "--prometheus-port", prom_port, "--scrape-interval", "1s",
                      "--data-dir", data], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
lines = []
for line in m.stdout:
    lines.append(line)
    if "[monitor] ready" in line:
        m.send_signal(signal.SIGINT)
lines.append(f"exit {m.wait(60)}")
print("".join(lines))
sys.exit(0 if "[monitor] ready" in "".join(lines) and m.returncode == 0 else 1)
"""


def user_env(home: Path) -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate` and `export RAY_AUTH_MODE=token`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", HOME=str(home), RAY_AUTH_MODE="token")
    return env


@pytest.mark.slow
def test_watching_a_job_in_the_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home)
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    token = (home / ".ray" / "auth_token").read_text().strip()
    temp = Path(tempfile.mkdtemp(prefix="rs-wb-", dir="/tmp"))  # short: Ray's unix sockets live in it
    while True:  # ten free ports, none in the workers' range
        lo = random.randrange(40000, 59000, 200)
        ports = free_ports(10)
        if not any(lo <= p <= lo + 150 for p in ports):
            break
    gcs, dash_port, prom_port, client, agent, agent_grpc, metrics, nm, om, rte = ports
    grafana = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GrafanaHealth)
    threading.Thread(target=grafana.serve_forever, daemon=True).start()
    grafana_url = f"http://127.0.0.1:{grafana.server_address[1]}"
    info_path = tmp_path / "monitor.json"
    log = open(tmp_path / "monitor.log", "w")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "raysplit.monitor", "--ray-temp-dir", str(temp), "--dashboard-port", str(dash_port),
         "--prometheus-port", str(prom_port), "--scrape-interval", "1s", "--graph-range", "1m", "--grafana-url", grafana_url,
         "--json", str(info_path), "--",
         f"--port={gcs}", f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
         f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--runtime-env-agent-port={rte}",
         f"--min-worker-port={lo}", f"--max-worker-port={lo + 150}", "--num-cpus=2",
         '--system-config={"metrics_report_interval_ms": 1000}'],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    run_dir = tmp_path / "run"
    tenant = f"watch-{uuid.uuid4().hex[:6]}"
    sid = f"raysplit-browser-{uuid.uuid4().hex[:6]}"
    prom_pid = None
    try:
        def ready():
            assert monitor.poll() is None, "the monitor exited:\n" + (tmp_path / "monitor.log").read_text()[-3000:]
            return info_path.exists() and json.loads(info_path.read_text())

        info = wait("the monitor's ready line", ready, timeout=180)
        prom_pid = info["prometheus_pid"]
        assert info["auth_mode"] == "token" and info["started_ray"]
        assert info["dashboard_sees_prometheus"], "the dashboard process did not get RAY_PROMETHEUS_HOST"
        dash = Dashboard(info["dashboard"], token)
        # The job, submitted as the README says (RAY_AUTH_MODE=token in the shell).
        r = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", info["dashboard"], "--submission-id", sid, "--no-wait",
             "--", "python", "jobs/deprune.py", "--clients", "2", "--dataset", "digits", "--batch-size", "16",
             "--max-batches", "60", "--test-subset", "64", "--epochs-per-budget", "3,2", "--no-progress",
             "--tenant", tenant, "--out", str(run_dir)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        t_submit = time.monotonic()

        # 1. The Ray dashboard's Jobs page, through the token dialog, as a person would.
        browser.get(info["dashboard"] + "/#/jobs")
        field = wait("the token dialog", lambda: browser.find_element(
            By.CSS_SELECTOR, "input[placeholder='Enter your authentication token']"), timeout=60)
        assert "Authentication Token Required" in browser.find_element(By.TAG_NAME, "body").text
        field.send_keys(token, Keys.ENTER)  # the dialog posts it to /api/authenticate, which sets the cookie
        wait("the dialog to close", lambda: not browser.find_elements(
            By.CSS_SELECTOR, "input[placeholder='Enter your authentication token']"), timeout=30)
        browser.get(info["dashboard"] + "/#/jobs")
        row = wait("the submitted job in the Jobs table", lambda: [
            tr for tr in browser.find_elements(By.CSS_SELECTOR, "tr") if sid in tr.text], timeout=60)[0]
        status = dash.get(f"/api/jobs/{sid}")["status"]
        assert status in ("PENDING", "RUNNING"), status  # seen during the job
        assert any(s in row.text for s in ("PENDING", "RUNNING")), row.text
        shoot(browser, "ray-dashboard-jobs")

        # 2. The Prometheus graph of the throughput query shows this job's samples/s.
        prom = Prometheus(tmp_path / "unused", temp, port=prom_port)
        wait("the job's throughput in Prometheus", lambda: [
            x for x in prom.query(info["queries"]["throughput"])
            if x["metric"].get("tenant") == tenant and float(x["value"][1]) > 0], timeout=120, every=1)
        # a graph worth looking at: 15 s of the job's samples/s, then the page, still during the job
        print(f"first throughput data {time.monotonic() - t_submit:.1f} s after the submission")
        wait("10 s of throughput data", lambda: len(prom.api(
            "query_range", query=info["queries"]["throughput"], start=time.time() - 60, end=time.time(),
            step=1)["result"][0]["values"]) >= 10, timeout=60, every=1)
        print(f"graph opened {time.monotonic() - t_submit:.1f} s after the submission")
        assert dash.get(f"/api/jobs/{sid}")["status"] == "RUNNING"
        browser.get(info["graphs"]["throughput"])
        legend = wait("the graph's legend entry for the job's tenant", lambda: [
            e for e in browser.find_elements(By.CSS_SELECTOR, ".rickshaw_legend li .label") if tenant in e.text],
            timeout=60)  # Debian's Prometheus 2.42 serves the classic (Rickshaw) UI
        assert legend[0].text == f'{{tenant="{tenant}"}}'
        lines = browser.execute_script(  # the series' line: an SVG path with more than one point
            "return [...document.querySelectorAll('.rickshaw_graph svg path')].map(p => p.getAttribute('d'))"
            ".filter(d => d && !d.startsWith('M-') && (d.match(/L/g) || []).length >= 1)")
        assert lines, "the graph has no series line"
        shoot(browser, "prometheus-throughput", height=1000)
        browser.set_window_size(1280, 900)

        # 3. The Metrics page embeds raysplit's Grafana dashboard (uid raysplit) for this session.
        health = dash.grafana_health()
        assert health["result"] and health["data"]["dashboardUids"]["data"] == "raysplit", health
        browser.get(info["dashboard"] + "/#/metrics")
        tab = wait("the Metrics page's second tab", lambda: [
            t for t in browser.find_elements(By.CSS_SELECTOR, "button[role='tab']") if t.text == "RAY DATA"
            or t.text.lower() == "ray data"], timeout=30)[0]
        tab.click()
        src = wait("the embedded raysplit dashboard", lambda: [
            f.get_attribute("src") for f in browser.find_elements(By.TAG_NAME, "iframe")
            if "/d/raysplit/" in (f.get_attribute("src") or "")], timeout=30)[0]
        assert src.startswith(grafana_url) and "var-datasource=Prometheus" in src
        assert f"var-SessionName={health['data']['sessionName']}" in src
        provisioned = json.loads(Path(info["grafana_provisioned"]).read_text())  # Ray's provisioning folder
        assert provisioned == json.loads((ROOT / "dashboards" / "raysplit.json").read_text())

        # 4. At the end the job wrote its report; it renders.
        wait("the job to succeed", lambda: dash.get(f"/api/jobs/{sid}")["status"] in ("SUCCEEDED", "FAILED",
                                                                                    "STOPPED"), timeout=300, every=2)
        assert dash.get(f"/api/jobs/{sid}")["status"] == "SUCCEEDED", dash.get(f"/api/jobs/{sid}")
        print(f"job done {time.monotonic() - t_submit:.1f} s after the submission")
        check_report_page(browser, run_dir / "report.html", 5)

        # 5. A second monitor attaches to the running head: it says that this head's dashboard
        #    reads another Prometheus, and its Ctrl-C stops only its own Prometheus.
        other_port = free_ports(1)[0]
        second = subprocess.run(
            [sys.executable, "-c", ATTACH_AND_STOP, str(temp), str(dash_port), str(other_port), str(tmp_path / "m2")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "warning: the dashboard does not see this Prometheus" in second.stdout, second.stdout
        assert "python -m raysplit.monitor env --prometheus-port" in second.stdout
        assert "Ray head of" not in second.stdout and "Ctrl-C stops Prometheus." in second.stdout
        assert dash.alive() and ray_processes(temp), "the attached monitor stopped a head it did not start"
    finally:
        if monitor.poll() is None:
            monitor.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            rc = monitor.wait(90)
        except subprocess.TimeoutExpired:
            monitor.kill()
            rc = None
        log.close()
        grafana.shutdown()
        left = ray_processes(temp)
        if left:  # never leave a cluster behind, whatever failed
            from raysplit.monitor import stop_head

            stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)
    out = (tmp_path / "monitor.log").read_text()
    assert rc == 0, out[-3000:]
    assert "[monitor] Prometheus stopped" in out and "Ray head of" in out
    assert prom_pid is not None and not _alive(prom_pid), "Prometheus outlived the monitor"
    assert left == [], f"Ray processes of {temp} left behind: {left}"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
