"""Scaling: aggregate training throughput, start-up time and peak memory vs the number
of clients (1 shard, small per-client work).

Every point starts a fresh Ray instance (``ray.init()`` ... ``ray.shutdown()``) so its
memory belongs to that configuration alone. A background thread samples, every
``--interval`` s, the memory of the whole Ray session: the driver and all its
descendants (gcs_server, raylet, dashboard and agents, the shard, the scheduler and every
client actor). The headline is the PSS sum (proportional set size: each shared page,
e.g. torch's libraries and the object store's shared memory, is split among the
processes mapping it, so nothing is double counted); USS (private pages only, a lower
bound) and RSS (double counts shared pages, an upper bound) are recorded too.

Throughput: aggregate training samples / the span of the last epoch's steps (first step
start to last step end over all clients; the first epoch includes warm-up); also
samples / summary ``train_seconds`` (whole run incl. evaluation).

    python benchmarks/scaling.py                    # 1,4,8,16,32 clients + 32 with 8 clients/actor
                                                    # + 32 with malloc fast (~9 min)
    python benchmarks/scaling.py --clients 1,4,8    # other points
    python benchmarks/scaling.py --quick            # smoke run: 1,4 clients
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from raysplit.config.cluster import MALLOC_MODES  # noqa: E402

NAME = "scaling"


def last_epoch_span(rows: list[dict]) -> tuple[int, float]:
    """(samples, seconds) of the last epoch: first step start to last step end, all clients."""
    last = max(r["epoch"] for r in rows)
    rs = [r for r in rows if r["epoch"] == last]
    span = max(r["t"] for r in rs) - min(r["t"] - r["latency"] for r in rs)
    return sum(r["samples"] for r in rs), span


def run_point(clients: int, per_client: int, batch: int, epochs: int, test_subset: int, cpa: int | str,
              interval: float, tmp: Path, malloc: str = "auto") -> dict:
    import ray

    import raysplit.runtime.cluster as rc
    from raysplit.config import SplitConfig, TrainConfig
    from raysplit.config.cluster import ClusterConfig

    cfg = TrainConfig(
        method="fixed",
        budgets=(4,),
        epochs_per_budget=(epochs,),
        split=SplitConfig(model="vgg_small", codec="float32"),
        batch_size=batch,
        train_subset=per_client * clients,
        test_subset=test_subset,
        max_batches=per_client // batch,
        out=str(tmp / f"c{clients}"),
    )
    cc = ClusterConfig(train=cfg, clients=clients, shards=1, client_cpu=None, cap_mechanism="none",
                       clients_per_actor=cpa, malloc=malloc)
    mon = C.Monitor(interval=interval).start()
    try:
        init_s = C.ray_init_quiet()
        mem_idle = mon.sample()
        cl = rc.Cluster(cc)
        t0 = time.perf_counter()
        cl.start(progress=False)
        started = mon.sample()
        try:
            cl.run(progress=False)
            s = cl.summary()
        finally:
            cl.stop()
        total_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
        mem = mon.stop()
    n_last, span_last = last_epoch_span(cl.rows)
    lat = [r["latency"] for r in cl.rows if r["epoch"] == max(x["epoch"] for x in cl.rows)]
    row = {
        "clients": clients,
        "clients_per_actor_requested": cpa,
        "clients_per_actor": s["clients_per_actor"],
        "actors": s["client_actors"],
        "malloc_requested": malloc,
        "malloc": s["malloc"],
        "samples": s["samples"],
        "failed": len(s["failed_clients"]),
        "ray_init_s": init_s,
        "startup_s": s["startup_seconds"],
        "train_seconds": s["train_seconds"],
        "total_s": total_s,
        "sps_last_epoch": n_last / span_last,
        "sps_train_seconds": s["samples"] / s["train_seconds"],
        "step_ms_median": 1000 * C.median(lat),
        "mean_merged": s["mean_merged_microbatches"],
        "idle_ray_pss_gib": mem_idle["pss"] / C.GIB,
        "after_start_pss_gib": started["pss"] / C.GIB,
        **mem,
    }
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 4 clients, no clients_per_actor row")
    ap.add_argument("--clients", default="1,4,8,16,32", help="comma list of client counts")
    ap.add_argument("--per-client", type=int, default=128, help="training samples per client")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--test-subset", type=int, default=64, help="test samples (each client evaluates them)")
    ap.add_argument("--per-actor", default="auto",
                    help="ClusterConfig.clients_per_actor for the --clients points (auto or N)")
    ap.add_argument("--grouped", default="16:1,32:1",
                    help="extra points clients:clients_per_actor[:malloc], comma list ('' = none)")
    ap.add_argument("--interval", type=float, default=0.5, help="memory sampling interval (s)")
    ap.add_argument("--malloc", choices=MALLOC_MODES, default="auto",
                    help="ClusterConfig.malloc for the --clients points (auto: fast up to 4 clients per CPU, "
                    "lean above)")
    ap.add_argument("--min-free-gib", type=float, default=0.6,
                    help="skip a point if available memory < this x actors + 2 GiB (shared machine)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each point wait up to this many s for other processes to go quiet (0 = never)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.clients, a.grouped, a.epochs = "1,4", "4:2", 1

    def per_actor(v: str) -> int | str:
        return v if v == "auto" else int(v)

    points = [(int(c), per_actor(a.per_actor), a.malloc) for c in a.clients.split(",") if c.strip()]
    for g in (g.strip() for g in a.grouped.split(",") if g.strip()):
        parts = g.split(":")
        points.append((int(parts[0]), per_actor(parts[1]), parts[2] if len(parts) > 2 else a.malloc))

    machine = C.machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-scaling-"))
    rows, skipped = [], []
    try:
        for clients, cpa, malloc in points:
            avail = C.psutil.virtual_memory().available / C.GIB
            need = a.min_free_gib * (clients if cpa == "auto" else -(-clients // cpa)) + 2
            print(f"- {clients} clients, {cpa} per actor, malloc {malloc} (available memory {avail:.1f} GiB) ...",
                  flush=True)
            if a.quiet_wait > 0:
                C.wait_for_quiet(a.quiet_wait)
                avail = C.psutil.virtual_memory().available / C.GIB
            if avail < need:
                print(f"  skipped: needs ~{need:.0f} GiB free", flush=True)
                skipped.append({"clients": clients, "clients_per_actor": cpa, "malloc": malloc,
                                "available_gib": avail})
                continue
            row = C.retry_on_ray_failure(
                run_point, clients, a.per_client, a.batch_size, a.epochs, a.test_subset, cpa, a.interval, tmp, malloc,
                reinit=False,
            )
            rows.append(row)
            print(
                f"  {row['sps_last_epoch']:.0f} samples/s, start-up {row['startup_s']:.1f} s, "
                f"peak PSS {row['peak_pss_gib']:.2f} GiB (USS {row['peak_uss_gib']:.2f}, RSS {row['peak_rss_gib']:.2f}), "
                f"other load {row['foreign_cpu_cores']:.2f} cores",
                flush=True,
            )
            gc.collect()
            time.sleep(2)  # let the previous session's processes exit
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cols = [
        ("clients", "clients", "d"),
        ("clients_per_actor", "per actor", "d"),
        ("actors", "actors", "d"),
        ("malloc", "malloc", ""),
        ("samples", "samples", "d"),
        ("sps_last_epoch", "samples/s (last epoch)", ".0f"),
        ("sps_train_seconds", "samples/s (train_seconds)", ".0f"),
        ("step_ms_median", "step ms (median)", ".0f"),
        ("mean_merged", "merged/step", ".2f"),
        ("ray_init_s", "ray.init s", ".1f"),
        ("startup_s", "start-up s", ".1f"),
        ("idle_ray_pss_gib", "idle Ray PSS GiB", ".2f"),
        ("peak_pss_gib", "peak PSS GiB", ".2f"),
        ("peak_uss_gib", "peak USS GiB", ".2f"),
        ("peak_rss_gib", "peak RSS GiB", ".2f"),
        ("peak_processes", "procs", "d"),
        ("failed", "failed", "d"),
        ("foreign_cpu_cores", "other load", ".2f"),
    ]
    setup = {
        "model": "vgg_small",
        "dataset": "fashion-mnist",
        "method": "fixed",
        "budget": 4,
        "codec": "float32",
        "shards": 1,
        "per_client_samples": a.per_client,
        "batch_size": a.batch_size,
        "max_batches": a.per_client // a.batch_size,
        "epochs": a.epochs,
        "test_subset": a.test_subset,
        "cpu_cap": None,
        "quick": a.quick,
        "malloc": "ClusterConfig.malloc per row: fast = MALLOC_ARENA_MAX=2 (freed memory kept for reuse), lean = "
        "MALLOC_MMAP_THRESHOLD_=65536 (freed tensors back to the OS, page faults every step); auto = lean when "
        "clients > 4 x CPUs",
        "skipped": skipped,
        "memory": "peak over samples every interval s of the sum over the driver and all its descendant "
        "processes (the whole Ray session); PSS = no double counting of shared pages (headline), "
        "USS = private pages only (lower bound), RSS = double counts shared pages (upper bound); "
        "peaks of the three sums may come from different samples",
        "sps_last_epoch": "samples of the last epoch / (last step end - first step start) over all clients",
        "startup_s": "summary startup_seconds: data load + actor creation until every actor is ready "
        "(ray.init not included: ray_init_s)",
        "target": "32 clients <= 12 GB",
    }
    table = C.text_table(rows, cols)
    print()
    print(table)
    md = (
        "# Scaling: clients on one machine (1 shard)\n\n"
        f"vgg_small, Fashion-MNIST, {a.per_client} samples per client, batch {a.batch_size}, "
        f"{a.epochs} epoch(s), fixed B=4, float32, no CPU cap; fresh Ray per row. "
        "Memory: peak of the summed PSS (USS, RSS) of the driver and every Ray process, "
        f"sampled every {a.interval} s. Target: 32 clients <= 12 GB.\n"
        f"Machine: {machine['cpu_count']} cores, {machine['memory_total_gib']} GiB, shared; created {C.now_iso()}.\n\n"
        + C.md_table(rows, cols)
    )
    result = {"benchmark": NAME, "created": C.now_iso(), "setup": setup, "machine": machine, "rows": rows}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
