"""The Ray side of the monitor: the dashboard's environment, its token, start and stop.

What Ray 2.60 reads, and when (``ray/dashboard/modules/metrics/metrics_head.py``): the
dashboard's metrics module reads ``RAY_PROMETHEUS_HOST``, ``RAY_PROMETHEUS_NAME``,
``RAY_GRAFANA_HOST``, ``RAY_GRAFANA_IFRAME_HOST`` and the dashboard-uid overrides
(``RAY_GRAFANA_<NAME>_DASHBOARD_UID``, ``grafana_dashboard_factory.py``) from its own
environment once, when it starts, and the dashboard process is started by
``ray start --head`` with that command's environment. So they must be in the environment
of ``ray start --head``; setting them later, or in the shell of ``ray job submit``, has no
effect until the head is restarted.

Token authentication (``ray/_private/authentication/http_token_authentication.py`` and
the dashboard's ``TokenAuthenticationDialog``): every dashboard API path but a few public
ones (``/``, ``/static/``, ``/api/authentication_mode``, ``/api/authenticate``, health
checks) wants ``Authorization: Bearer <token>``, ``X-Ray-Authorization``, or the cookie
``ray-authentication-token``. In a browser the dashboard asks for the token in a dialog,
posts it to ``/api/authenticate``, which sets that cookie (HttpOnly, SameSite=Strict, 30
days). The metrics export ports Prometheus scrapes need no token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

RAYSPLIT_DASHBOARD_UID = "raysplit"  # tools/dashboards.py DASHBOARD_UID
# The Ray dashboard's Metrics page embeds its "core" dashboard and, in a second tab, the
# dashboard whose uid the data dashboard has. raysplit uses no Ray Data, so the monitor
# points that tab at raysplit's Grafana dashboard (core and the overview stay Ray's).
DATA_TAB_UID_VAR = "RAY_GRAFANA_DATA_DASHBOARD_UID"


def dashboard_env(prometheus_url: str, grafana_url: str | None = None, grafana_iframe_url: str | None = None,
                  datasource: str = "Prometheus", raysplit_tab: bool = True) -> dict[str, str]:
    """The variables ``ray start --head`` must have for its dashboard to use this
    Prometheus (and a Grafana, when there is one)."""
    env = {"RAY_PROMETHEUS_HOST": prometheus_url, "RAY_PROMETHEUS_NAME": datasource}
    if grafana_url:
        env["RAY_GRAFANA_HOST"] = grafana_url
        if grafana_iframe_url:
            env["RAY_GRAFANA_IFRAME_HOST"] = grafana_iframe_url
        if raysplit_tab:
            env[DATA_TAB_UID_VAR] = RAYSPLIT_DASHBOARD_UID
    return env


REPO_DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "raysplit.json"


def provision_raysplit_dashboard(temp_dir: str | Path, source: Path = REPO_DASHBOARD) -> Path | None:
    """Put raysplit's dashboard where Ray's generated Grafana provisioning reads its data
    dashboard (``session_latest/metrics/grafana/dashboards/data_grafana_dashboard.json``):
    with the uid override above Ray writes its data dashboard under uid ``raysplit``, so a
    Grafana provisioned from that folder (Ray's documented ``grafana-server --config
    .../grafana.ini``) then has Ray's core dashboard and raysplit's, and the Metrics tab
    shows raysplit's. Returns the path written, or None without a checkout's JSON."""
    target = Path(temp_dir) / "session_latest" / "metrics" / "grafana" / "dashboards" / "data_grafana_dashboard.json"
    # Ray writes its dashboards one after the other at start-up, train's last
    # (metrics_head.py _create_default_grafana_configs); copy only after that, or Ray's
    # write would replace ours.
    if not source.exists() or not (target.parent / "train_grafana_dashboard.json").exists():
        return None
    shutil.copyfile(source, target)
    return target


def auth_token() -> str | None:
    """The cluster token as Ray's own CLI finds it (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), or None if there is none."""
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    if not loader.has_token(ignore_auth_mode=True):
        return None
    return loader.get_raw_token(ignore_auth_mode=True)


class Dashboard:
    """The Ray dashboard's HTTP API, with the token when there is one.

    Args:
        url: e.g. ``http://127.0.0.1:8265``.
        token: the cluster token (default: :func:`auth_token`).
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else auth_token()

    def get(self, path: str, timeout: float = 5.0):
        req = urllib.request.Request(self.url + path)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode())

    def alive(self) -> bool:
        try:
            self.get("/api/authentication_mode", timeout=2)
            return True
        except (OSError, ValueError):
            return False

    def auth_mode(self) -> str:
        return self.get("/api/authentication_mode")["authentication_mode"]

    def prometheus_health(self) -> tuple[bool, str]:
        body = self.get("/api/prometheus_health")
        return bool(body.get("result")), body.get("msg", "") + (
            f" ({body['data']['reason']})" if body.get("data", {}).get("reason") else "")

    def grafana_health(self) -> dict:
        return self.get("/api/grafana_health")

    def jobs(self) -> list[dict]:
        return self.get("/api/jobs/")


def ray_cli() -> str:
    """The ``ray`` command next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


def start_head(temp_dir: str | Path, dashboard_host: str, dashboard_port: int, extra: list[str],
               env: dict[str, str]) -> None:
    """``ray start --head`` with the dashboard's variables in its environment, and token
    authentication on as in the README's cluster sequence (``RAY_AUTH_MODE=token``, the
    token generated first if there is none) unless the caller's environment sets
    ``RAY_AUTH_MODE`` otherwise."""
    for flag in ("--temp-dir", "--dashboard-port", "--dashboard-host"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            raise ValueError(f"give {flag} to the monitor (--ray-temp-dir / --dashboard-port / --dashboard-host), "
                             "not after --: the monitor needs to know it too")
    cmd = [ray_cli(), "start", "--head", f"--temp-dir={temp_dir}", f"--dashboard-host={dashboard_host}",
           f"--dashboard-port={dashboard_port}", *extra]
    full = {**os.environ, **env}
    full.setdefault("RAY_AUTH_MODE", "token")
    if full["RAY_AUTH_MODE"] == "token" and auth_token() is None:
        subprocess.run([ray_cli(), "get-auth-token", "--generate"], env=full, capture_output=True, check=True)
    r = subprocess.run(cmd, env=full, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")


def ray_processes(temp_dir: str | Path):
    """The processes of the Ray instance whose temp dir is ``temp_dir`` (its daemons name
    the temp or session dir on their command line) and all their children (workers and
    agents rename themselves ``ray::...``)."""
    import psutil

    temp = str(Path(temp_dir))
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}

    def mine(args: list[str]) -> bool:
        return any(a == temp or a.endswith("=" + temp) or f"{temp}/session_" in a for a in args[1:])

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid not in me and mine(p.info["cmdline"] or []):
                roots.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return [p for pid, p in found.items() if pid not in me]


def stop_head(temp_dir: str | Path, timeout: float = 15.0) -> int:
    """Stop only the Ray instance of ``temp_dir`` (``ray stop`` would stop every Ray on
    the machine): SIGTERM, then SIGKILL after ``timeout``. Returns how many processes."""
    import psutil

    procs = ray_processes(temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def dashboard_prometheus_host(temp_dir: str | Path) -> str | None:
    """The RAY_PROMETHEUS_HOST the dashboard process of ``temp_dir``'s Ray instance was
    started with, when that process runs on this machine ("" when it was started without
    one); None when no such process is found here (a remote head: only the dashboard's
    health check can tell)."""
    import psutil

    for p in ray_processes(temp_dir):
        try:
            if any(a.endswith("dashboard.py") or a.endswith("dashboard/dashboard.py") for a in p.cmdline()):
                return p.environ().get("RAY_PROMETHEUS_HOST", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def wait_for(check, timeout: float, what: str, every: float = 0.5):
    """Poll ``check()`` until it returns something truthy; TimeoutError naming ``what``."""
    t0 = time.monotonic()
    while True:
        try:
            got = check()
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            got = None
        if got:
            return got
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not seen within {timeout:.0f} s")
        time.sleep(every)
