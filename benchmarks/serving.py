"""Split inference served by Ray Serve against in-process tail inference, and under load.

Three measurements, one Ray instance, side by side:

1. **Throughput**: the tail deployment (``--replicas`` replicas x ``--cpus-per-replica``
   CPUs, request batching) saturated by ``--concurrency`` requests in flight, against the
   same tail in this process on the same cores (torch threads = replicas x CPUs), fed the
   same messages in batches of ``--max-batch-size``. Interleaved ``--repeats`` times;
   target: Serve >= 0.8 of in-process requests/s.
2. **Latency against offered load**: Poisson arrivals at fractions of the measured Serve
   capacity; p50/p99 of the serving time (submit to answer) and the achieved rate; plot.
3. **Budgets on mixed links**: ``--clients`` emulated clients, links assigned in turn from
   ``--links``, at a fixed budget and with budgets chosen per request for ``--deadline``
   (NAIR slices cut by the link, or the module's B from the link's rate). End-to-end
   latency = client compute + uplink (emulated link) + serving (measured) + downlink;
   bytes per request; accuracy of what was served, and agreement with the same messages
   answered in process.

Client compute runs before the load phase (each request's message is prepared first), so
the cores measure the tail alone; its time is measured and added to the latency.

    python benchmarks/serving.py --model runs/nair              # a NAIR run (jobs/nair.py)
    python benchmarks/serving.py                                # trains a small NAIR model first
    python benchmarks/serving.py --quick
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


def _train_model(tmp: Path, quick: bool) -> Path:
    from raysplit import nair
    from raysplit.config import SplitConfig
    from raysplit.config.nair import NairConfig

    cfg = NairConfig(train_subset=512 if quick else 4096, test_subset=64, original_epochs=1 if quick else 3,
                     epochs=1, slices=8, variants=("nair",), deadlines=(0.2,), progress=False, out=str(tmp / "nair"))
    nair.run(cfg, SplitConfig(use_module=False))
    return tmp / "nair"


def _messages(served, test, n: int, links: list[str], deadline: float | None, budget: int | None, seed: int):
    """One prepared request per test image, client i % clients on links[client % len(links)]."""
    from raysplit.serving.client import EdgeClient

    clients = {}
    out = []
    for i in range(n):
        c = i % max(1, len(links) * 8)
        if c not in clients:
            clients[c] = EdgeClient(served, links[c % len(links)], c, deadline=deadline, budget=budget, seed=seed)
        r = clients[c].request(test.x[i % len(test) : i % len(test) + 1], start=i * 0.05)
        out.append((r, int(test.y[i % len(test)]), links[c % len(links)]))
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


def _plot(path: Path, sweep: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [r["offered_rps"] for r in sweep]
    ax.plot(x, [r["p50_ms"] for r in sweep], marker="o", label="p50")
    ax.plot(x, [r["p99_ms"] for r in sweep], marker="s", label="p99")
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
    ap.add_argument("--seconds", type=float, default=8.0, help="per throughput measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loads", default="0.2,0.4,0.6,0.8,0.95,1.1", help="offered load, fractions of the capacity")
    ap.add_argument("--load-seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--requests", type=int, default=480, help="requests per budget mode")
    ap.add_argument("--links", default="250kbit;lte;wifi", help="';'-separated, assigned in turn")
    ap.add_argument("--deadline", default="150ms")
    ap.add_argument("--budget", type=int, default=None, help="the fixed budget (default: the largest)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=120.0, help="seconds to wait for a quiet machine")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.seconds, a.repeats, a.loads, a.load_seconds, a.requests, a.concurrency = 2.0, 1, "0.5,1.0", 2.0, 48, 16

    import ray
    import torch
    from ray import serve

    from raysplit.config.serve import ServeConfig
    from raysplit.data import load_dataset
    from raysplit.link.units import parse_time
    from raysplit.serving.app import start
    from raysplit.serving.emulate import summarize
    from raysplit.serving.model import load_served
    from raysplit.serving.tail import TailService

    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-serving-"))
    try:
        model = Path(a.model) if a.model else _train_model(tmp, a.quick)
        served = load_served(model, variant=a.variant)
        test = load_dataset("fashion-mnist" if not a.quick else "fashion-mnist", "test",
                            image_size=served.model.split.input_shape[-1], seed=0, limit=1000)
        links = [s for s in a.links.split(";") if s]
        deadline = parse_time(a.deadline, "deadline")
        fixed = _messages(served, test, a.requests, links, None, a.budget, 0)
        by_deadline = _messages(served, test, a.requests, links, deadline, None, 0)
        msgs = [r.message for r, _, _ in fixed]
        cores = a.replicas * a.cpus_per_replica
        machine = C.machine_info()
        quiet = C.wait_for_quiet(a.quiet_wait)

        C.ray_init_quiet(num_cpus=max(2, int(np.ceil(cores)) + 1), include_dashboard=False)
        cfg = ServeConfig(model=str(model), variant=a.variant, name="bench-tail", replicas=a.replicas,
                          cpus_per_replica=a.cpus_per_replica, max_batch_size=a.max_batch_size,
                          batch_wait_s=a.batch_wait_s, max_ongoing=max(64, a.concurrency), max_queued=-1)
        tail = start(cfg)
        svc = TailService(served, threads=max(1, int(round(cores))))
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_closed_loop(tail, msgs, a.concurrency, 1.0))  # warm-up
            _inprocess_rps(svc, msgs, a.max_batch_size, 0.5)
            pairs = []
            for rep in range(a.repeats):
                inproc = _inprocess_rps(svc, msgs, a.max_batch_size, a.seconds)
                srv, lat = loop.run_until_complete(_closed_loop(tail, msgs, a.concurrency, a.seconds))
                pairs.append({"repeat": rep, "in_process_rps": inproc, "serve_rps": srv, "ratio": srv / inproc,
                              "serve_p50_ms": 1e3 * C.median(lat), "serve_p99_ms": 1e3 * float(np.percentile(lat, 99))})
                print(f"  repeat {rep}: in-process {inproc:.0f} req/s, serve {srv:.0f} req/s, ratio {srv / inproc:.3f}",
                      flush=True)
            capacity = C.median(p["serve_rps"] for p in pairs)
            sweep = []
            for f in [float(v) for v in a.loads.split(",")]:
                r = loop.run_until_complete(_open_loop(tail, msgs, f * capacity, a.load_seconds, 1))
                r["load_fraction"] = f
                sweep.append(r)
                print(f"  offered {r['offered_rps']:.0f} req/s: achieved {r['achieved_rps']:.0f}, p50 {r['p50_ms']:.1f}"
                      f" ms, p99 {r['p99_ms']:.1f} ms", flush=True)
            modes = []
            for mode, prepared in (("fixed", fixed), ("deadline", by_deadline)):
                rows = loop.run_until_complete(_run_requests(tail, prepared, 0.5 * capacity, 2))
                wall = sum(1 for _ in rows) / (0.5 * capacity)
                summ = summarize(rows, wall)
                served_rows = [r for r in rows if r["prediction"] is not None]
                local = svc.predict([r["message"] for r in served_rows])
                summ["in_process_agreement"] = float(np.mean([int(x.predictions[0]) == r["prediction"]
                                                              for x, r in zip(local, served_rows)]))
                summ["on_time"] = float(np.mean([r["on_time"] and r["usable"] for r in rows]))
                summ["mode"] = mode
                summ["by_link"] = {ln: summarize([r for r in rows if r["link"] == ln], wall) for ln in links}
                modes.append(summ)
                print(f"  {mode}: accuracy {summ['accuracy']:.3f}, agreement {summ['in_process_agreement']:.3f}, "
                      f"bytes/request {summ['bytes_per_request']:.0f}, p50 {1e3 * summ['latency_p50_s']:.0f} ms, "
                      f"p99 {1e3 * summ['latency_p99_s']:.0f} ms", flush=True)
            stats = tail.stats()
        finally:
            loop.close()
            tail.shutdown()
            serve.shutdown()
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = C.median(p["ratio"] for p in pairs)
    out_dir = a.out_dir or C.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(out_dir / "serving_latency.png", sweep)
    setup = {"model": str(model) if a.model else "a small NAIR model trained by the benchmark",
             "kind": served.kind, "budgets": list(served.budgets()), "replicas": a.replicas,
             "cpus_per_replica": a.cpus_per_replica, "in_process_threads": max(1, int(round(cores))),
             "max_batch_size": a.max_batch_size, "batch_wait_s": a.batch_wait_s, "concurrency": a.concurrency,
             "seconds": a.seconds, "repeats": a.repeats, "links": links, "deadline_s": deadline,
             "quiet_wait_s": quiet, "target": "serve >= 0.8 x in-process requests/s", "torch": torch.__version__,
             "batch_sizes_seen": sorted({b for s in stats for b in s["batches"]})[-5:]}
    cols_pairs = [("repeat", "repeat", "d"), ("in_process_rps", "in-process req/s", ".0f"),
                  ("serve_rps", "serve req/s", ".0f"), ("ratio", "ratio", ".3f"),
                  ("serve_p50_ms", "p50 ms", ".1f"), ("serve_p99_ms", "p99 ms", ".1f")]
    cols_sweep = [("load_fraction", "load", ".2f"), ("offered_rps", "offered req/s", ".0f"),
                  ("achieved_rps", "achieved req/s", ".0f"), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f")]
    cols_modes = [("mode", "budget", ""), ("mean_budget", "mean budget", ".2f"),
                  ("bytes_per_request", "bytes/request", ".0f"), ("accuracy", "accuracy", ".3f"),
                  ("in_process_agreement", "= in-process", ".3f"), ("on_time", "on time", ".3f"),
                  ("latency_p50_s", "p50 s", ".3f"), ("latency_p99_s", "p99 s", ".3f")]
    md = (f"# Serving\n\nCreated {C.now_iso()}. {setup['model']} ({served.kind} budgets); "
          f"{a.replicas} replicas x {a.cpus_per_replica} CPU vs in-process with {setup['in_process_threads']} threads. "
          f"Serve / in-process requests/s (median of {a.repeats}): **{ratio:.3f}** (target 0.8).\n\n"
          + C.md_table(pairs, cols_pairs) + "\n\nLatency against offered load (serving time):\n\n"
          + C.md_table(sweep, cols_sweep) + f"\n\nMixed links ({', '.join(links)}), deadline {a.deadline}:\n\n"
          + C.md_table(modes, cols_modes))
    print()
    print(C.text_table(pairs, cols_pairs))
    print(C.text_table(sweep, cols_sweep))
    print(C.text_table(modes, cols_modes))
    print(f"serve / in-process requests/s: {ratio:.3f} (target >= 0.8)")
    result = {"benchmark": NAME, "created": C.now_iso(), "setup": setup, "machine": machine, "pairs": pairs,
              "ratio": ratio, "sweep": sweep, "modes": modes}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
