"""Split inference served by Ray Serve against in-process tail inference, and under load.

Three measurements, one Ray instance, side by side:

1. **Throughput**: the tail deployment (``--replicas`` replicas x ``--cpus-per-replica``
   CPUs, request batching) saturated by ``--concurrency`` requests in flight, against the
   same tail in this process on the same cores (torch threads = replicas x CPUs), fed the
   same messages in batches of ``--max-batch-size``. Each request is one message of
   ``--images-per-request`` images (1: one frame per request, the issue's case; more: an
   edge client that sends several frames at once); every size is measured in every one of
   the ``--repeats`` interleaved repeats. Serve is measured twice: one handle call per
   request, and coalesced (``--coalesce``: this process, which holds every request in
   flight, sends up to that many per call, ``serving.coalesce``; each keeps its own message
   and answer). Target: Serve >= 0.8 of in-process requests/s.
2. **Latency against offered load**: Poisson arrivals of one-image requests at fractions
   of the measured Serve capacity (per request, and coalesced: each at its own capacity);
   p50/p99 of the serving time (submit to answer) and the achieved rate; plot.
3. **Budgets on mixed links**: ``--clients`` emulated clients, links assigned in turn from
   ``--links``, one image per request, offered at half the capacity: one run at each of
   ``--fixed-budgets`` and one with budgets chosen per request for each of ``--deadlines``
   (NAIR slices cut by the link, the module's B from the link's rate, or the cut layer).
   End-to-end latency = client compute + uplink (emulated link) + serving (measured) +
   downlink; requests/s; bytes per request (what crossed the link); accuracy of what was
   served, against the same messages answered in process by the same model.

Client compute runs before the load phases (each request's message is prepared first), so
the cores measure the tail alone; its time is measured and added to the latency.

    python benchmarks/serving.py --model runs/nair              # a NAIR run (jobs/nair.py)
    python benchmarks/serving.py                                # trains a small NAIR model first
    python benchmarks/serving.py --quick                        # a short smoke run (tests/test_serving_benchmark.py)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _common as C  # noqa: E402

NAME = "serving"
QUICK = {"seconds": 2.0, "coalesce": 8, "repeats": 1, "loads": "0.5,1.0", "load_seconds": 2.0, "requests": 48, "concurrency": 16,
         "clients": 6, "images_per_request": "1,4", "fixed_budgets": "", "deadlines": "150ms"}


def _train_model(tmp: Path, quick: bool) -> Path:
    from raysplit import nair
    from raysplit.config import SplitConfig
    from raysplit.config.nair import NairConfig

    cfg = NairConfig(train_subset=512 if quick else 4096, test_subset=64, original_epochs=1 if quick else 3,
                     epochs=1, slices=8, variants=("nair",), deadlines=(0.2,), progress=False, out=str(tmp / "nair"))
    nair.run(cfg, SplitConfig(use_module=False))
    return tmp / "nair"


def _messages(served, test, n: int, links: list[str], deadline: float | None, budget: int | None, seed: int,
              clients: int):
    """``n`` prepared one-image requests, request i from client i % clients, client c on
    links[c % len(links)], sent at i x 50 ms on the links' clock."""
    from raysplit.serving.client import EdgeClient

    edges = {}
    out = []
    for i in range(n):
        c = i % clients
        if c not in edges:
            edges[c] = EdgeClient(served, links[c % len(links)], c, deadline=deadline, budget=budget, seed=seed)
        r = edges[c].request(test.x[i % len(test) : i % len(test) + 1], start=i * 0.05)
        out.append((r, int(test.y[i % len(test)]), links[c % len(links)]))
    return out


def _frames(served, test, n: int, images: int, budget: int | None) -> list[bytes]:
    """``n`` messages at ``budget`` (default: the largest) of ``images`` consecutive test images
    each: an edge client that sends several frames per request."""
    from raysplit.compression.slices import truncate_slices
    from raysplit.serving.client import EdgeClient

    edge = EdgeClient(served, "10mbit", 0, budget=budget)
    out = []
    for i in range(n):
        m = edge.message(test.x[(np.arange(images) + i * images) % len(test)], edge.budget)
        if served.kind == "slices" and edge.budget < max(served.budgets()):
            m = truncate_slices(m, edge.budget)
        out.append(m)
    return out


def _inprocess_rps(svc, msgs: list[bytes], batch: int, min_s: float) -> float:
    done, t0 = 0, time.perf_counter()
    while True:
        for i in range(0, len(msgs), batch):
            svc.predict(msgs[i : i + batch])
            done += len(msgs[i : i + batch])
        if time.perf_counter() - t0 >= min_s:
            return done / (time.perf_counter() - t0)


async def _closed_loop(tail, msgs: list[bytes], concurrency: int, min_s: float) -> tuple[float, list[float]]:
    lat: list[float] = []
    t0 = time.perf_counter()
    stop = t0 + min_s
    counter = iter(range(10**9))

    async def worker():
        while time.perf_counter() < stop:
            m = msgs[next(counter) % len(msgs)]
            t = time.perf_counter()
            await tail.infer_async(m)
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(lat) / (time.perf_counter() - t0), lat


async def _open_loop(tail, msgs: list[bytes], rate: float, duration: float, seed: int) -> dict:
    from raysplit.serving.app import Overloaded

    rng = random.Random(seed)
    lat: list[float] = []
    refused = 0
    tasks = []
    t0 = time.perf_counter()

    async def one(m):
        nonlocal refused
        t = time.perf_counter()
        try:
            await tail.infer_async(m)
            lat.append(time.perf_counter() - t)
        except Overloaded:
            refused += 1

    k, t_next = 0, t0
    while t_next < t0 + duration:
        delay = t_next - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(msgs[k % len(msgs)])))
        k += 1
        t_next += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return {"offered_rps": rate, "sent": k, "answered": len(lat), "refused": refused, "achieved_rps": len(lat) / wall,
            "p50_ms": 1e3 * C.median(lat) if lat else float("nan"),
            "p99_ms": 1e3 * float(np.percentile(lat, 99)) if lat else float("nan")}


async def _run_requests(tail, prepared, rate: float, seed: int) -> list[dict]:
    """Send prepared requests as Poisson arrivals at ``rate``; serving time measured."""
    rng = random.Random(seed)
    rows: list[dict] = []

    async def one(req, label, link):
        row = {"link": link, "budget": req.budget, "bytes": req.sent_bytes, "label": label,
               "compute_s": req.compute_s, "uplink_s": req.uplink_s, "downlink_s": req.downlink_s,
               "usable": req.usable, "on_time": req.on_time, "prediction": None, "error": None, "serve_s": 0.0,
               "message": req.message}
        if req.usable:
            t = time.perf_counter()
            ans = await tail.infer_async(req.message)
            row["serve_s"] = time.perf_counter() - t
            row["prediction"] = ans["predictions"][0] if ans["predictions"] else None
            row["error"] = ans["error"]
        row["latency_s"] = row["compute_s"] + row["uplink_s"] + row["serve_s"] + row["downlink_s"]
        rows.append(row)

    tasks = []
    for req, label, link in prepared:
        tasks.append(asyncio.ensure_future(one(req, label, link)))
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    return rows


def _plot(path: Path, sweep: list[dict], sends: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for send, color in zip(sends, ("C0", "C1")):
        rows = [r for r in sweep if r["send"] == send]
        x = [r["offered_rps"] for r in rows]
        ax.plot(x, [r["p50_ms"] for r in rows], marker="o", color=color, label=f"{send}, p50")
        ax.plot(x, [r["p99_ms"] for r in rows], marker="s", ls="--", color=color, label=f"{send}, p99")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("serving latency (ms)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model file or run directory (default: train a small NAIR model)")
    ap.add_argument("--variant", default=None)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--cpus-per-replica", type=float, default=1.0)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-s", type=float, default=0.005)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--coalesce", type=int, default=32,
                    help="phases 1-2: also measure Serve with up to this many requests per call (0: do not)")
    ap.add_argument("--coalesce-wait-s", type=float, default=0.002,
                    help="how long a coalesced call waits for requests to join it")
    ap.add_argument("--max-ongoing", type=int, default=None, help="per replica (default: max(64, --concurrency))")
    ap.add_argument("--seconds", type=float, default=8.0, help="per throughput measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loads", default="0.2,0.4,0.6,0.8,0.95,1.1", help="offered load, fractions of the capacity")
    ap.add_argument("--load-seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--requests", type=int, default=480, help="requests per budget mode")
    ap.add_argument("--links", default="250kbit;lte;wifi", help="';'-separated, assigned in turn")
    ap.add_argument("--deadlines", default="150ms,500ms", help="phase 3: deadline-driven budgets, one run each")
    ap.add_argument("--fixed-budgets", default="1,2,4,8",
                    help="phase 3: fixed budgets, one run each ('': the largest)")
    ap.add_argument("--budget", type=int, default=None,
                    help="phases 1-2: the budget of every message (default: the largest)")
    ap.add_argument("--images-per-request", default="1,4,16",
                    help="phase 1: images (frames) per request, ','-separated, each measured side by side; 1 must be "
                         "among them (phases 2-3 send one image per request)")
    ap.add_argument("--dataset", default="fashion-mnist", help="where the requests' images come from (test split)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=120.0, help="seconds to wait for a quiet machine")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:  # small everywhere, except what the command line set
        for name, v in QUICK.items():
            if getattr(a, name) == ap.get_default(name):
                setattr(a, name, v)
    try:
        ks = sorted({int(v) for v in a.images_per_request.split(",") if v.strip()})
    except ValueError:
        ap.error(f"--images-per-request: give positive integers separated by ',', got {a.images_per_request!r}")
    if not ks or ks[0] < 1 or 1 not in ks:
        ap.error(f"--images-per-request must list positive integers including 1, got {a.images_per_request!r}")
    if a.clients < 1:
        ap.error(f"--clients must be >= 1, got {a.clients}")
    if a.coalesce < 0 or a.coalesce_wait_s < 0:
        ap.error(f"--coalesce and --coalesce-wait-s must be >= 0, got {a.coalesce}, {a.coalesce_wait_s}")

    import ray
    import torch
    from ray import serve

    from raysplit.config.serve import ServeConfig
    from raysplit.data import load_dataset
    from raysplit.link.units import parse_time
    from raysplit.serving.app import start
    from raysplit.serving.coalesce import Coalescer
    from raysplit.serving.emulate import summarize
    from raysplit.serving.model import load_served
    from raysplit.serving.tail import TailService

    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-serving-"))
    try:
        model = Path(a.model) if a.model else _train_model(tmp, a.quick)
        served = load_served(model, variant=a.variant)
        test = load_dataset(a.dataset, "test",
                            image_size=served.model.split.input_shape[-1], seed=0, limit=1000)
        links = [s for s in a.links.split(";") if s]
        deadlines = [parse_time(d, "deadline") for d in a.deadlines.split(",") if d.strip()]
        fixed_budgets = ([served.check_budget(int(b)) for b in a.fixed_budgets.split(",") if b.strip()]
                         if a.fixed_budgets else [max(served.budgets())])
        plans = [(f"fixed {b}", b, None, _messages(served, test, a.requests, links, None, b, 0, a.clients))
                 for b in fixed_budgets]
        plans += [(f"deadline {1e3 * d:g} ms", None, d,
                   _messages(served, test, a.requests, links, d, None, 0, a.clients)) for d in deadlines]
        msgs = _frames(served, test, a.requests, 1, None)  # phase 2: whole one-image messages
        sizes = {b: len(_frames(served, test, 1, 1, b)[0]) for b in served.budgets()}  # one image's message
        cores = a.replicas * a.cpus_per_replica
        machine = C.machine_info()
        quiet = C.wait_for_quiet(a.quiet_wait)

        C.ray_init_quiet(num_cpus=max(2, int(np.ceil(cores)) + 1), include_dashboard=False)
        cfg = ServeConfig(model=str(model), variant=a.variant, name="bench-tail", replicas=a.replicas,
                          cpus_per_replica=a.cpus_per_replica, max_batch_size=a.max_batch_size,
                          batch_wait_s=a.batch_wait_s, max_ongoing=a.max_ongoing or max(64, a.concurrency),
                          max_queued=-1)
        tail = start(cfg)
        senders = {"per request": tail}
        if a.coalesce:
            senders["coalesced"] = Coalescer(tail, max_batch=a.coalesce, wait_s=a.coalesce_wait_s)
        svc = TailService(served, threads=max(1, int(round(cores))))
        loop = asyncio.new_event_loop()
        try:
            frames = {k: _frames(served, test, max(64, a.concurrency), k, a.budget) for k in ks}
            for k in ks:  # warm-up
                for sender in senders.values():
                    loop.run_until_complete(_closed_loop(sender, frames[k], a.concurrency, min(1.0, a.seconds / 2)))
                _inprocess_rps(svc, frames[k], a.max_batch_size, min(0.5, a.seconds / 4))
            pairs = []
            for rep in range(a.repeats):
                for k in ks:  # side by side: every size and way of sending in every repeat
                    inproc = _inprocess_rps(svc, frames[k], a.max_batch_size, a.seconds)
                    for send, sender in senders.items():
                        before = tail.stats()
                        t_srv = time.perf_counter()
                        srv, lat = loop.run_until_complete(_closed_loop(sender, frames[k], a.concurrency, a.seconds))
                        t_srv = time.perf_counter() - t_srv
                        after = tail.stats()
                        # where Serve's time goes: the replicas' own work (decode + tail) against the wall. A
                        # replica Serve restarted meanwhile (a failed health check) starts its counters afresh:
                        # then these figures are not known (NaN), and the row says so.
                        b0, b1 = {s["pid"]: s for s in before}, {s["pid"]: s for s in after}
                        restarted = set(b0) != set(b1) or any(b1[p]["requests"] < b0[p]["requests"] for p in b1)
                        nan = float("nan")
                        busy = nan if restarted else sum(b1[p]["compute_s"] - b0[p]["compute_s"] for p in b1)
                        answered = nan if restarted else sum(b1[p]["requests"] - b0[p]["requests"] for p in b1)
                        calls = nan if restarted else sum(len(b1[p]["batches"]) - len(b0[p]["batches"]) for p in b1)
                        pairs.append({"repeat": rep, "images_per_request": k, "send": send,
                                      "bytes_per_request": len(frames[k][0]), "in_process_rps": inproc,
                                      "serve_rps": srv, "ratio": srv / inproc, "serve_images_per_s": k * srv,
                                      "serve_p50_ms": 1e3 * C.median(lat),
                                      "serve_p99_ms": 1e3 * float(np.percentile(lat, 99)),
                                      "in_process_ms_per_request": 1e3 * cores / inproc,
                                      "replica_compute_ms_per_request": 1e3 * busy / max(1, answered),
                                      "requests_per_replica_batch": answered / max(1, calls),
                                      "replica_busy_fraction": busy / (t_srv * a.replicas),
                                      "replica_restarted": restarted})
                        print(f"  repeat {rep}, {k} image(s)/request, {send}: in-process {inproc:.0f} req/s, serve "
                              f"{srv:.0f} req/s, ratio {srv / inproc:.3f}", flush=True)
            batches = [b for s in tail.stats() for b in s["batches"]]
            sweep = []
            for send, sender in senders.items():
                capacity = C.median(p["serve_rps"] for p in pairs if p["images_per_request"] == 1 and p["send"] == send)
                for f in [float(v) for v in a.loads.split(",")]:
                    r = loop.run_until_complete(_open_loop(sender, msgs, f * capacity, a.load_seconds, 1))
                    r.update(load_fraction=f, send=send)
                    sweep.append(r)
                    print(f"  {send}, offered {r['offered_rps']:.0f} req/s: achieved {r['achieved_rps']:.0f}, "
                          f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms", flush=True)
            capacity = C.median(p["serve_rps"] for p in pairs if p["images_per_request"] == 1
                                and p["send"] == "per request")
            modes = []
            for mode, budget, dl, prepared in plans:
                t0 = time.perf_counter()
                rows = loop.run_until_complete(_run_requests(tail, prepared, 0.5 * capacity, 2))
                wall = time.perf_counter() - t0
                summ = summarize(rows, wall)
                summ["wall_s"] = wall
                served_rows = [r for r in rows if r["prediction"] is not None]
                local = svc.predict([r["message"] for r in served_rows])
                summ["in_process_agreement"] = float(np.mean([x.predictions is not None
                                                              and int(x.predictions[0]) == r["prediction"]
                                                              for x, r in zip(local, served_rows)]))
                # the same messages answered in this process; a request with nothing usable counts as wrong, as served
                summ["in_process_accuracy"] = sum(x.predictions is not None and int(x.predictions[0]) == r["label"]
                                                  for x, r in zip(local, served_rows)) / len(rows)
                summ["on_time"] = float(np.mean([r["on_time"] and r["usable"] for r in rows]))
                summ.update(mode=mode, budget=budget, deadline_s=dl,
                            budget_counts={int(b): int(n) for b, n in zip(*np.unique([r["budget"] for r in rows],
                                                                                      return_counts=True))})
                summ["by_link"] = {ln: summarize([r for r in rows if r["link"] == ln], wall) for ln in links}
                modes.append(summ)
                print(f"  {mode}: accuracy {summ['accuracy']:.3f} (in process {summ['in_process_accuracy']:.3f}), "
                      f"agreement {summ['in_process_agreement']:.3f}, bytes/request {summ['bytes_per_request']:.0f}, "
                      f"{summ['requests_per_s']:.0f} req/s, p50 {1e3 * summ['latency_p50_s']:.0f} ms, "
                      f"p99 {1e3 * summ['latency_p99_s']:.0f} ms", flush=True)
        finally:
            loop.close()
            tail.shutdown()
            serve.shutdown()
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary_k = []
    for send in senders:
        for k in ks:
            ps = [p for p in pairs if p["images_per_request"] == k and p["send"] == send]
            r = C.median(p["ratio"] for p in ps)
            summary_k.append({"send": send, "images_per_request": k, "bytes_per_request": ps[0]["bytes_per_request"],
                              "in_process_rps": C.median(p["in_process_rps"] for p in ps),
                              "serve_rps": C.median(p["serve_rps"] for p in ps), "ratio": r, "meets_target": r >= 0.8})
    ratios = {r["send"]: r["ratio"] for r in summary_k if r["images_per_request"] == 1}
    ratio = ratios["per request"]
    out_dir = a.out_dir or C.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(out_dir / "serving_latency.png", sweep, list(senders))
    setup = {"model": str(model) if a.model else "a small NAIR model trained by the benchmark", "dataset": a.dataset,
             "kind": served.kind, "budgets": list(served.budgets()), "replicas": a.replicas,
             "cpus_per_replica": a.cpus_per_replica, "in_process_threads": max(1, int(round(cores))),
             "max_batch_size": a.max_batch_size, "batch_wait_s": a.batch_wait_s, "concurrency": a.concurrency,
             "coalesce": a.coalesce, "coalesce_wait_s": a.coalesce_wait_s,
             "max_ongoing": cfg.max_ongoing, "access_log": cfg.access_log, "seconds": a.seconds, "repeats": a.repeats,
             "images_per_request": ks, "clients": a.clients, "requests_per_mode": a.requests, "links": links,
             "deadlines_s": deadlines, "fixed_budgets": fixed_budgets, "message_bytes_by_budget": sizes,
             "quiet_wait_s": quiet, "target": "serve >= 0.8 x in-process requests/s", "torch": torch.__version__,
             "phase1_batches": {"count": len(batches), "mean": float(np.mean(batches)) if batches else float("nan"),
                                "max": max(batches, default=0)}}
    cols_k = [("send", "sent", ""), ("images_per_request", "images/request", "d"), ("bytes_per_request", "bytes/request", "d"),
              ("in_process_rps", "in-process req/s", ".0f"), ("serve_rps", "serve req/s", ".0f"),
              ("ratio", "ratio (median)", ".3f"), ("meets_target", ">= 0.8", "")]
    cols_pairs = [("repeat", "repeat", "d"), ("images_per_request", "images/request", "d"), ("send", "sent", ""),
                  ("in_process_rps", "in-process req/s", ".0f"), ("serve_rps", "serve req/s", ".0f"),
                  ("ratio", "ratio", ".3f"), ("serve_p50_ms", "p50 ms", ".1f"), ("serve_p99_ms", "p99 ms", ".1f"),
                  ("in_process_ms_per_request", "in-process core-ms/req", ".2f"),
                  ("replica_compute_ms_per_request", "replica compute ms/req", ".2f"),
                  ("requests_per_replica_batch", "req/replica batch", ".1f"),
                  ("replica_busy_fraction", "replicas busy", ".2f")]
    cols_sweep = [("send", "sent", ""), ("load_fraction", "load", ".2f"), ("offered_rps", "offered req/s", ".0f"),
                  ("achieved_rps", "achieved req/s", ".0f"), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f")]
    cols_modes = [("mode", "budget", ""), ("mean_budget", "mean budget", ".2f"),
                  ("bytes_per_request", "bytes/request", ".0f"), ("requests_per_s", "req/s", ".0f"),
                  ("accuracy", "accuracy", ".3f"), ("in_process_accuracy", "in-process acc.", ".3f"),
                  ("in_process_agreement", "= in-process", ".3f"), ("on_time", "on time", ".3f"),
                  ("latency_p50_s", "p50 s", ".3f"), ("latency_p99_s", "p99 s", ".3f")]
    link_rows = [{"mode": m["mode"], "link": ln, **v} for m in modes for ln, v in m["by_link"].items()]
    cols_links = [("mode", "budget", ""), ("link", "link", ""), ("mean_budget", "mean budget", ".2f"),
                  ("bytes_per_request", "bytes/request", ".0f"), ("accuracy", "accuracy", ".3f"),
                  ("latency_p50_s", "p50 s", ".3f"), ("latency_p99_s", "p99 s", ".3f")]
    md = (f"# Serving\n\nCreated {C.now_iso()}. {setup['model']} ({served.kind} budgets); "
          f"{a.replicas} replicas x {a.cpus_per_replica} CPU vs in-process with {setup['in_process_threads']} threads, "
          f"batches of up to {a.max_batch_size} requests on both sides, {a.concurrency} requests in flight. "
          f"Serve / in-process requests/s at one image per request (median of {a.repeats}): **{ratio:.3f}** with one "
          f"handle call per request"
          + (f", **{ratios['coalesced']:.3f}** coalesced (up to {a.coalesce} requests per call, the first waiting at "
             f"most {1e3 * a.coalesce_wait_s:g} ms)" if "coalesced" in ratios else "")
          + " (target 0.8).\n\n" + C.md_table(summary_k, cols_k) + "\n\nEvery measurement:\n\n"
          + C.md_table(pairs, cols_pairs)
          + "\n\nLatency against offered load (serving time, one image per request):\n\n"
          + C.md_table(sweep, cols_sweep) + f"\n\n{a.clients} clients on mixed links ({', '.join(links)}), one image "
          f"per request, offered at half the capacity:\n\n" + C.md_table(modes, cols_modes)
          + "\n\nBy link:\n\n" + C.md_table(link_rows, cols_links))
    print()
    print(C.text_table(summary_k, cols_k))
    print(C.text_table(pairs, cols_pairs))
    print(C.text_table(sweep, cols_sweep))
    print(C.text_table(modes, cols_modes))
    print(C.text_table(link_rows, cols_links))
    for r in summary_k:
        print(f"serve ({r['send']}) / in-process requests/s at {r['images_per_request']} image(s)/request: "
              f"{r['ratio']:.3f} "
              f"({'meets' if r['meets_target'] else 'misses'} the 0.8 target)")
    result = {"benchmark": NAME, "created": C.now_iso(), "setup": setup, "machine": machine, "pairs": pairs,
              "ratio": ratio, "ratio_coalesced": ratios.get("coalesced"), "ratio_by_images_per_request": summary_k, "sweep": sweep, "modes": modes}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
