"""python -m raysplit.monitor: Prometheus wired to Ray, the URLs to open, Ctrl-C to stop.

    python -m raysplit.monitor [OPTIONS] [-- RAY_START_OPTIONS]
    python -m raysplit.monitor env [OPTIONS]      # the exports `ray start --head` needs

With ``--ray auto`` (default) it attaches to the Ray head whose dashboard answers at
--dashboard-host:--dashboard-port, or starts one (``ray start --head --temp-dir
--dashboard-port ... RAY_START_OPTIONS``) with the dashboard's variables set, and stops
that one again on Ctrl-C (only that one: ``ray stop`` would stop every Ray here).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import sys
import time
import urllib.error
from pathlib import Path

from raysplit.monitor.prometheus import Prometheus, sd_file
from raysplit.monitor.queries import graph_url, main_queries
from raysplit.monitor.ray_head import (DATA_TAB_UID_VAR, REPO_DASHBOARD, Dashboard, dashboard_env,
                                       dashboard_prometheus_host, provision_raysplit_dashboard,
                                       start_head, stop_head, wait_for)

DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m)$")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m raysplit.monitor", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("command", nargs="?", choices=("run", "env"), default="run",
                   help="run (default): monitor; env: print the exports for `ray start --head` and exit")
    p.add_argument("--ray", choices=("auto", "start", "attach"), default="auto",
                   help="auto: attach to a running head, else start one; start: always start one; "
                        "attach: never start one (wait for it)")
    p.add_argument("--ray-temp-dir", default="/tmp/ray", help="Ray's --temp-dir (its service-discovery file is there)")
    p.add_argument("--dashboard-host", default="127.0.0.1")
    p.add_argument("--dashboard-port", type=int, default=8265)
    p.add_argument("--host", default="127.0.0.1", help="where Prometheus listens")
    p.add_argument("--prometheus-port", type=int, default=9090)
    p.add_argument("--scrape-interval", default="5s", help="Prometheus scrape interval (e.g. 1s, 5s, 1m)")
    p.add_argument("--graph-range", default="10m", help="time range the graph links open with (e.g. 5m, 1h)")
    p.add_argument("--grafana-url", default=os.environ.get("RAY_GRAFANA_HOST"),
                   help="a Grafana the dashboard process reaches (sets RAY_GRAFANA_HOST); import "
                        "dashboards/raysplit.json there")
    p.add_argument("--grafana-iframe-url", default=os.environ.get("RAY_GRAFANA_IFRAME_HOST"),
                   help="that Grafana as the browser reaches it, if different (RAY_GRAFANA_IFRAME_HOST)")
    p.add_argument("--datasource", default="Prometheus", help="the Prometheus data source's name in that Grafana")
    p.add_argument("--no-raysplit-tab", action="store_true",
                   help="keep Ray's own data dashboard in the dashboard's second Metrics tab")
    p.add_argument("--data-dir", default=None, help="Prometheus' folder (default RAY_TEMP_DIR/raysplit-monitor)")
    p.add_argument("--json", default=None, help="also write the URLs and process ids to this file")
    p.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for Ray and the first scrape")
    return p


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if not re.match(r"^[1-9][0-9]*[smhdw]$", a.graph_range):
        p.error(f"--graph-range: {a.graph_range!r} is not a range like 5m, 1h or 2d")
    if not DURATION.match(a.scrape_interval):
        p.error(f"--scrape-interval: {a.scrape_interval!r} is not a duration like 1s, 500ms or 1m")
    for name in ("dashboard_port", "prometheus_port"):
        v = getattr(a, name)
        if not 1 <= v <= 65535:
            p.error(f"--{name.replace('_', '-')}: {v} is not a port (1-65535)")
    if a.dashboard_port == a.prometheus_port:
        p.error(f"--dashboard-port and --prometheus-port are both {a.dashboard_port}")
    if not a.ray_temp_dir.startswith("/"):
        a.ray_temp_dir = os.path.abspath(a.ray_temp_dir)


def env_lines(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


class _Stop(Exception):
    pass


def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C
    raise _Stop()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = parser()
    a = p.parse_args(argv)
    check(p, a)
    prom_url = f"http://{a.host}:{a.prometheus_port}"
    env = dashboard_env(prom_url, a.grafana_url, a.grafana_iframe_url, a.datasource, not a.no_raysplit_tab)
    if a.command == "env":
        print(env_lines(env))
        return 0
    dash_url = f"http://{a.dashboard_host}:{a.dashboard_port}"
    dash = Dashboard(dash_url)
    running = dash.alive()
    if a.ray == "start" and running:
        p.exit(2, f"{p.prog}: error: a Ray dashboard already answers at {dash_url}; use --ray attach, "
                  "or another --dashboard-port\n")
    start = a.ray == "start" or (a.ray == "auto" and not running)
    if extra and not start:
        p.exit(2, f"{p.prog}: error: options after -- are for `ray start`, but a head already runs at {dash_url}\n")
    data_dir = Path(a.data_dir or Path(a.ray_temp_dir) / "raysplit-monitor")
    prom = Prometheus(data_dir, a.ray_temp_dir, host=a.host, port=a.prometheus_port, scrape_interval=a.scrape_interval)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (&)
    started_ray = False
    try:
        prom.start()
        print(f"[monitor] Prometheus {prom.url} (pid {prom.proc.pid}, config {prom.config_path})", flush=True)
        if start:
            print(f"[monitor] starting a Ray head: ray start --head --temp-dir={a.ray_temp_dir} "
                  f"--dashboard-port={a.dashboard_port} {' '.join(extra)}\n{env_lines(env)}", flush=True)
            start_head(a.ray_temp_dir, a.dashboard_host, a.dashboard_port, extra, env)
            started_ray = True
        elif not running:
            print(f"[monitor] waiting for a Ray head at {dash_url}; start it with these in its environment:\n"
                  f"{env_lines(env)}\nray start --head --temp-dir={a.ray_temp_dir} --dashboard-port={a.dashboard_port}",
                  flush=True)
        wait_for(dash.alive, a.ready_timeout if start else 1e9, f"the Ray dashboard at {dash_url}")
        dash = Dashboard(dash_url)  # the token may have been created by `ray start`
        provisioned = None
        if started_ray and DATA_TAB_UID_VAR in env and REPO_DASHBOARD.exists():
            provisioned = wait_for(lambda: provision_raysplit_dashboard(a.ray_temp_dir), 30,
                                   "Ray's generated Grafana dashboards folder")
        targets = wait_for(lambda: [t for t in prom.targets() if t["health"] == "up"], a.ready_timeout,
                           f"a Ray metrics target in {sd_file(a.ray_temp_dir)}")
        report(a, prom, dash, targets, started_ray, provisioned)
        while True:
            time.sleep(2)
            if prom.proc.poll() is not None:
                tail = prom.log_path.read_text(errors="replace")[-1500:]
                print(f"[monitor] Prometheus exited ({prom.proc.returncode}):\n{tail}", file=sys.stderr)
                return 1
    except (KeyboardInterrupt, _Stop):
        print("\n[monitor] stopping", flush=True)
        return 0
    except (TimeoutError, RuntimeError, FileNotFoundError, ValueError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prom.stop()
        print(f"[monitor] Prometheus stopped", flush=True)
        if started_ray:
            n = stop_head(a.ray_temp_dir)
            print(f"[monitor] Ray head of {a.ray_temp_dir} stopped ({n} processes)", flush=True)


def report(a, prom: Prometheus, dash: Dashboard, targets: list[dict], started_ray: bool,
           provisioned: Path | None = None) -> None:
    """Print what to open, and write it as JSON when asked."""
    mode = dash.auth_mode()
    try:
        healthy, why = dash.prometheus_health()
    except urllib.error.HTTPError as e:  # 401/403: this shell has no (or another) cluster token
        healthy, why = False, (f"the dashboard refused the check ({e.code}): no valid token here "
                               "(`ray get-auth-token` on the head prints it; put it in RAY_AUTH_TOKEN)")
    if healthy:
        # The health check says the dashboard reaches *a* Prometheus; on this machine we can
        # also tell whether it is this one (a head started by someone else reads its own).
        host = dashboard_prometheus_host(a.ray_temp_dir)
        if host is not None and host.rstrip("/") != prom.url.rstrip("/"):
            healthy, why = False, f"it reads RAY_PROMETHEUS_HOST={host or '(unset)'}, not {prom.url}"
    queries = main_queries()
    links = {q.key: graph_url(prom.url, q.expr, a.graph_range) for q in queries}
    links["all"] = graph_url(prom.url, [q.expr for q in queries], a.graph_range)
    w = max(len(q.title) for q in queries)
    lines = ["", "raysplit monitor", f"  Ray dashboard  {dash.url}"]
    if mode == "token":
        lines.append("                 token authentication is on: the page asks for the cluster's token once per "
                     "browser;\n                 `ray get-auth-token` prints it")
    lines.append(f"  Prometheus     {prom.url}   ({len(targets)} Ray targets up, from {sd_file(a.ray_temp_dir)})")
    if healthy:
        lines.append("                 the dashboard sees this Prometheus (RAY_PROMETHEUS_HOST)")
    elif why.startswith("the dashboard refused"):
        lines.append(f"  warning: could not ask the dashboard whether it sees Prometheus: {why}")
    else:
        lines.append(f"  warning: the dashboard does not see this Prometheus: {why}.\n"
                     "           It reads RAY_PROMETHEUS_HOST when `ray start --head` starts it; restart the head with\n"
                     f"           eval \"$(python -m raysplit.monitor env --prometheus-port {a.prometheus_port})\" first.")
    if a.grafana_url:
        lines.append(f"  Grafana        {a.grafana_iframe_url or a.grafana_url}  (import dashboards/raysplit.json; "
                     "the dashboard's Metrics page embeds it)")
        if provisioned:
            lines.append(f"                 or provision it from {provisioned.parents[1]}/grafana.ini "
                         "(Ray's dashboards + raysplit's)")
    lines.append("  graphs")
    lines += [f"    {q.title:<{w}}  {links[q.key]}" for q in queries]
    lines.append(f"    {'all of them on one page':<{w}}  {links['all']}")
    submit = ("RAY_AUTH_MODE=token " if mode == "token" else "") + \
        f"ray job submit --address {dash.url} -- python jobs/deprune.py --clients 32"
    lines += [f"  submit a job   {submit}",
              "Ctrl-C stops Prometheus" + (" and this Ray head." if started_ray else "."), "[monitor] ready"]
    print("\n".join(lines), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "dashboard": dash.url, "prometheus": prom.url, "prometheus_pid": prom.proc.pid, "auth_mode": mode,
            "dashboard_sees_prometheus": healthy, "started_ray": started_ray, "targets": targets,
            "graphs": links, "queries": {q.key: q.expr for q in queries}, "data_dir": str(prom.data_dir),
            "grafana_provisioned": str(provisioned) if provisioned else None,
        }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
