"""Emulated edge clients against a served tail: Ray actors, each with the model's head, its
own link and budget rule, sending one test image per request.

``run_clients`` starts them, collects one record per request and compares what was served
with the same messages answered in process (``TailService`` in the driver): the
predictions must agree, and the accuracy is reported both ways.
"""

from __future__ import annotations

import time

import numpy as np
import ray

from raysplit.config.serve import ClientsConfig, ServeConfig
from raysplit.data import ArrayDataset

__all__ = ["ClientActor", "run_clients", "summarize", "percentile"]


@ray.remote(num_cpus=0.25)
class ClientActor:
    """One emulated client (its head computes here; the tail runs in the deployment)."""

    def __init__(self, serve_cfg: ServeConfig, link: str, client_id: int, deadline: float | None,
                 budget: int | None, seed: int) -> None:
        import torch

        from raysplit.serving.app import TailClient
        from raysplit.serving.client import EdgeClient
        from raysplit.serving.model import load_served

        torch.set_num_threads(1)
        key = bytes.fromhex(serve_cfg.key_hex) if serve_cfg.key_hex else None
        self.edge = EdgeClient(load_served(serve_cfg.model, variant=serve_cfg.variant), link, client_id,
                               deadline=deadline, budget=budget, seed=seed, key=key)
        self.tail = TailClient.connect(serve_cfg)
        self.link, self.client_id = link, client_id

    def run(self, x: np.ndarray, y: np.ndarray, interval: float, realtime: bool) -> list[dict]:
        from raysplit.serving.app import Overloaded

        rows = []
        for i in range(len(x)):
            t0 = time.perf_counter()
            req = self.edge.request(x[i : i + 1], start=i * interval)
            row = {"client": self.client_id, "link": self.link, "request": i, "label": int(y[i]),
                   "budget": req.budget, "bytes": req.sent_bytes, "compute_s": req.compute_s,
                   "uplink_s": req.uplink_s, "downlink_s": req.downlink_s, "on_time": req.on_time,
                   "usable": req.usable, "prediction": None, "error": None, "serve_s": 0.0, "message": req.message}
            if req.usable:
                if realtime:
                    time.sleep(req.uplink_s)
                t1 = time.perf_counter()
                try:
                    ans = self.tail.infer(req.message)
                    row["prediction"] = ans["predictions"][0] if ans["predictions"] else None
                    row["error"] = ans["error"]
                except Overloaded as e:
                    row["error"] = str(e)
                row["serve_s"] = time.perf_counter() - t1
                if realtime:
                    time.sleep(req.downlink_s)
            row["latency_s"] = row["compute_s"] + row["uplink_s"] + row["serve_s"] + row["downlink_s"]
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            if realtime and interval > 0:
                time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
        return rows


def percentile(values, q: float) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return float(np.percentile(v, q)) if len(v) else float("nan")


def summarize(rows: list[dict], wall_s: float) -> dict:
    """Requests/s, latency percentiles, bytes per request and accuracy of a set of requests."""
    n = len(rows)
    answered = [r for r in rows if r["prediction"] is not None]
    lat = [r["latency_s"] for r in answered]
    return {
        "requests": n,
        "answered": len(answered),
        "failed": sum(r["error"] is not None for r in rows),
        "no_data_in_time": sum(not r["usable"] for r in rows),
        "late": sum(r["usable"] and not r["on_time"] for r in rows),
        "requests_per_s": len(answered) / wall_s if wall_s > 0 else float("nan"),
        "latency_p50_s": percentile(lat, 50),
        "latency_p99_s": percentile(lat, 99),
        "serve_p50_s": percentile([r["serve_s"] for r in answered], 50),
        "serve_p99_s": percentile([r["serve_s"] for r in answered], 99),
        "bytes_per_request": float(np.mean([r["bytes"] for r in rows])) if rows else float("nan"),
        "mean_budget": float(np.mean([r["budget"] for r in answered])) if answered else float("nan"),
        "accuracy": sum(r["prediction"] == r["label"] for r in answered) / n if n else float("nan"),
    }


def run_clients(serve_cfg: ServeConfig, cfg: ClientsConfig, test: ArrayDataset) -> tuple[list[dict], dict]:
    """Run ``cfg.clients`` emulated clients against the deployment ``serve_cfg`` names (already
    started); returns the per-request rows and the summary (with the in-process check)."""
    from raysplit.serving.tail import TailService

    n = cfg.requests
    actors = [ClientActor.remote(serve_cfg, cfg.links[c % len(cfg.links)], c, cfg.deadline, cfg.budget,
                                 cfg.link_seed) for c in range(cfg.clients)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    t0 = time.perf_counter()
    futures = []
    for c, a in enumerate(actors):
        idx = (np.arange(n) + c * n) % len(test)
        futures.append(a.run.remote(test.x[idx], test.y[idx], cfg.interval, cfg.realtime))
    rows = [r for rs in ray.get(futures) for r in rs]
    wall = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    summary = summarize(rows, wall)
    summary["wall_s"] = wall
    # the same messages, answered in this process by the same model
    key = bytes.fromhex(serve_cfg.key_hex) if serve_cfg.key_hex else None
    local = TailService(serve_cfg.model, variant=serve_cfg.variant, key=key)
    served = [r for r in rows if r["prediction"] is not None]
    inproc = local.predict([r["message"] for r in served]) if served else []
    agree = [int(a.predictions[0]) == r["prediction"] for a, r in zip(inproc, served) if a.predictions is not None]
    summary["in_process_agreement"] = float(np.mean(agree)) if agree else float("nan")
    summary["in_process_accuracy"] = (sum(int(a.predictions[0]) == r["label"] for a, r in zip(inproc, served)
                                          if a.predictions is not None) / len(rows)) if rows else float("nan")
    summary["by_link"] = {link: summarize([r for r in rows if r["link"] == link], wall)
                          for link in dict.fromkeys(r["link"] for r in rows)}
    for r in rows:
        del r["message"]
    return rows, summary
