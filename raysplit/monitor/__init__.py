"""Live monitoring of a Ray cluster running raysplit jobs, in one command.

    python -m raysplit.monitor            # or: make monitor

starts Debian's Prometheus on a config generated here (it follows the service-discovery
file Ray writes into its temp dir), starts a Ray head with the dashboard's Prometheus and
Grafana variables in its environment (or attaches to a running one and says whether its
dashboard can see Prometheus), prints the URLs and ready-made graph links, and on Ctrl-C
stops Prometheus and the Ray head it started, leaving no process behind.
"""

from __future__ import annotations

from raysplit.monitor.prometheus import Prometheus, prometheus_config, sd_file
from raysplit.monitor.queries import Query, graph_url, main_queries
from raysplit.monitor.ray_head import Dashboard, auth_token, dashboard_env, ray_processes, start_head, stop_head

__all__ = ["Dashboard", "Prometheus", "Query", "auth_token", "dashboard_env", "graph_url", "main_queries",
           "prometheus_config", "ray_processes", "sd_file", "start_head", "stop_head"]
