"""Debian's Prometheus, scraping Ray through the service-discovery file Ray writes.

Ray's dashboard (its ``ReporterHead``) rewrites
``<session dir>/prom_metrics_service_discovery.json`` every 5 s with every alive node's
metrics export address (plus the autoscaler's and the dashboard's), and keeps a link to
it at ``<temp dir>/prom_metrics_service_discovery.json`` (``ray/_private/metrics_agent.py``,
``PrometheusServiceDiscoveryWriter``). The config below points Prometheus at that link, so
it follows the cluster across ``ray start`` sessions and node joins; ``refresh_interval``
makes it re-read the file even though the file behind the link changes without an event
on the link's folder.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

SD_FILE = "prom_metrics_service_discovery.json"  # ray._private.ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE


def sd_file(ray_temp_dir: str | Path) -> Path:
    return Path(ray_temp_dir) / SD_FILE


def prometheus_config(ray_temp_dir: str | Path, scrape_interval: str = "5s") -> dict:
    """The scrape configuration (a dict; YAML is a superset of JSON, so it is written as JSON)."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{
            "job_name": "ray",
            "file_sd_configs": [{"files": [str(sd_file(ray_temp_dir))], "refresh_interval": scrape_interval}],
        }],
    }


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the kernel sends Prometheus SIGTERM when the monitor dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Prometheus:
    """One Prometheus server process.

    Args:
        data_dir: its folder (config, TSDB, log).
        ray_temp_dir: the Ray temp dir whose service-discovery file it follows.
        host, port: where its web UI and API listen.
        scrape_interval: Prometheus duration (``5s``).
        binary: the prometheus executable (default: ``prometheus`` on PATH).
    """

    def __init__(self, data_dir: str | Path, ray_temp_dir: str | Path, *, host: str = "127.0.0.1", port: int = 9090,
                 scrape_interval: str = "5s", binary: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.ray_temp_dir = Path(ray_temp_dir)
        self.host, self.port, self.scrape_interval = host, port, scrape_interval
        self.binary = binary or shutil.which("prometheus")
        if self.binary is None:
            raise FileNotFoundError("prometheus is not installed: `make setup` installs Debian's package "
                                    "(or: apt-get install prometheus)")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

    def start(self, timeout: float = 30.0) -> None:
        """Write the config, start the server, wait until its query API answers."""
        with socket.socket() as probe:
            if probe.connect_ex((self.host, self.port)) == 0:
                raise RuntimeError(f"{self.host}:{self.port} is in use (another Prometheus?); "
                                   "pass another --prometheus-port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(prometheus_config(self.ray_temp_dir, self.scrape_interval), indent=2))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.data_dir / 'data'}",
             f"--web.listen-address={self.host}:{self.port}", "--storage.tsdb.retention.time=7d"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the monitor, which stops Prometheus in order
            preexec_fn=_die_with_parent,
        )
        log.close()
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus exited with status {self.proc.returncode}:\n{tail}")
            try:
                self.query("vector(1)")
                return
            except OSError:
                if time.monotonic() - t0 > timeout:
                    self.stop()
                    raise TimeoutError(f"prometheus did not answer on {self.url} within {timeout:.0f} s "
                                       f"(log: {self.log_path})") from None
                time.sleep(0.2)

    def api(self, path: str, **params) -> dict | list:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read().decode())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def targets(self) -> list[dict]:
        """The active scrape targets (address, health) Prometheus found through the file."""
        return [{"address": t["labels"].get("instance", t.get("scrapeUrl")), "health": t["health"]}
                for t in self.api("targets", state="active")["activeTargets"]]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes its head block), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
