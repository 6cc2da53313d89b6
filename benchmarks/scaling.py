"""Scaling: aggregate training throughput, start-up time and peak memory vs the number
of clients, for the same total work (1 shard).

Every point runs the job's defaults (``jobs/deprune.py``: deprune 4 -> 128 over 2 + 1
epochs on 8,192 Fashion-MNIST samples, batch 32, 500 test images shared among the
clients) split over N clients, so every row trains the same 24,576 samples; only the
number of clients (and so of processes and merged micro-batches) changes. The target is
32 clients at >= 0.8 of the 8-client throughput.

Every point starts a fresh Ray instance (``ray.init()`` ... ``ray.shutdown()``) so its
memory belongs to that configuration alone. A background thread samples, every
``--interval`` s, the memory of the whole Ray session: the driver and all its
descendants (gcs_server, raylet, dashboard and agents, the shard, the scheduler and every
client actor). The headline is the PSS sum (proportional set size: each shared page,
e.g. torch's libraries and the object store's shared memory, is split among the
processes mapping it, so nothing is double counted); USS (private pages only, a lower
bound) and RSS (double counts shared pages, an upper bound) are recorded too.

Throughput: training samples / summary ``train_seconds`` (the whole run after start-up,
evaluation included, as a user sees it); also samples / the span of the last epoch's
steps (first step start to last step end over all clients).

    python benchmarks/scaling.py                    # 1, 8, 16, 32 clients + 32 as 32 processes (~10 min)
    python benchmarks/scaling.py --clients 8,32     # other points
    python benchmarks/scaling.py --quick            # smoke run: 1 and 4 clients on 512 samples
    python benchmarks/scaling.py --clients 8 --grouped "" --virtual 32:2,128:2,512:2,1024:2 \
        --link-points 8:all,4096:2                  # virtual clients; 4,096 in virtual-time link mode
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


def last_epoch_span(rows: list) -> tuple[int, float]:
    """(samples, seconds) of the last epoch: first step start to last step end, all clients."""
    last = max(r.epoch for r in rows)
    rs = [r for r in rows if r.epoch == last]
    span = max(r.time for r in rs) - min(r.time - r.latency for r in rs)
    return sum(r.samples for r in rs), span


def run_point(clients: int, cpa: int | str, malloc: str, a, tmp: Path, materialise: int | str = "all",
              link: str = "none") -> dict:
    import ray

    from raysplit.config import ClusterConfig, TrainConfig
    from raysplit.config.link import LinkConfig
    from raysplit.runtime.driver import Cluster

    lc = LinkConfig() if link == "none" else LinkConfig(link=link, link_mode="virtual")
    cfg = TrainConfig(train_subset=a.train_subset, epochs_per_budget=a.epochs, out=str(tmp / f"c{clients}"),
                      progress=False, link=lc)
    cc = ClusterConfig(train=cfg, clients=clients, clients_per_actor=cpa, malloc=malloc, materialise=materialise,
                       failure_policy=a.failure_policy)
    from raysplit.observability.callbacks import StepCollector

    col = StepCollector()
    mon = C.Monitor(interval=a.interval, duty=a.sampler_duty).start()
    try:
        init_s = C.ray_init_quiet()
        mem_idle = mon.sample()
        cl = Cluster(cc, callbacks=[col])
        t0 = time.perf_counter()
        cl.start()
        started = mon.sample()
        try:
            s = cl.run()
        finally:
            cl.stop()
        total_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
        mem = mon.stop()
    n_last, span_last = last_epoch_span(col.rows)
    last = max(r.epoch for r in col.rows)
    lat = [r for r in col.rows if r.epoch == last]
    return {
        "clients": clients,
        "clients_per_actor_requested": cpa,
        "clients_per_actor": s.clients_per_actor,
        "actors": s.client_actors,
        "materialise": materialise,
        "link": link,
        "failure_policy": a.failure_policy,
        "sim_seconds": s.sim_seconds,
        "parked_kib_per_client": None if s.virtual is None else s.virtual["parked_bytes_per_client"] / 1024,
        "materialise_ms": None if s.virtual is None else s.virtual["materialise_ms"],
        "park_ms": None if s.virtual is None else s.virtual["park_ms"],
        "malloc_requested": malloc,
        "malloc": s.malloc,
        "samples": s.samples,
        "failed": len(s.failed_clients),
        "final_test_accuracy": s.final_test_accuracy,
        "ray_init_s": init_s,
        "startup_s": s.startup_seconds,
        "train_seconds": s.train_seconds,
        "total_s": total_s,
        "sps_train_seconds": s.samples / s.train_seconds,
        "sps_last_epoch": n_last / span_last,
        "step_ms_median": 1000 * C.median(r.latency for r in lat),
        "exchange_ms_median": 1000 * C.median(r.exchange_s for r in lat),
        "queue_ms_median": 1000 * C.median(r.queue_s for r in lat),
        "server_ms_median": 1000 * C.median(r.server_s for r in lat),
        "mean_merged": s.mean_merged_microbatches,
        "idle_ray_pss_gib": mem_idle["pss"] / C.GIB,
        "after_start_pss_gib": started["pss"] / C.GIB,
        **mem,
    }


def marginal_pss_per_client(row: dict, rows: list[dict]) -> float | None:
    """Memory per idle client: the peak PSS this virtual row adds over the next smaller
    virtual row with the same processes and slots (so the same materialised clients),
    per added client (KiB). None for the smallest such row and non-virtual rows."""
    if row["materialise"] == "all":
        return None
    same = [r for r in rows if r["materialise"] == row["materialise"] and r["actors"] == row["actors"]
            and r["link"] == row["link"] and r.get("failure_policy") == row.get("failure_policy")
            and r["clients"] < row["clients"]]
    if not same:
        return None
    prev = max(same, key=lambda r: r["clients"])
    return (row["peak_pss_gib"] - prev["peak_pss_gib"]) * C.GIB / 1024 / (row["clients"] - prev["clients"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 4 clients on 512 samples, 1 epoch each "
                    "(explicit --clients, --grouped, --epochs, --train-subset override these)")
    ap.add_argument("--clients", default="1,8,16,32", help="comma list of client counts")
    ap.add_argument("--train-subset", type=int, default=8192, help="training samples in total (the job's default)")
    ap.add_argument("--epochs", type=lambda v: tuple(int(e) for e in v.split(",")), default=(2, 1),
                    help="epochs per budget (the job's default 2,1: deprune 4 -> 128)")
    ap.add_argument("--per-actor", default="auto",
                    help="ClusterConfig.clients_per_actor for the --clients points (auto or N)")
    ap.add_argument("--grouped", default="32:1",
                    help="extra points clients:clients_per_actor[:malloc], comma list ('' = none)")
    ap.add_argument("--virtual", default="",
                    help="virtual-client points clients:materialised-per-actor, comma list (e.g. 128:2,1024:2)")
    ap.add_argument("--link-points", default="",
                    help="points in virtual-time link mode, clients:materialised-per-actor (or all), comma list "
                    "(e.g. 8:all,4096:2: the 8-client row is their baseline); their link: --link")
    ap.add_argument("--link", default="wifi", help="the emulated link of the --link-points (raysplit.link.spec)")
    ap.add_argument("--failure-policy", default="restart",
                    help="ClusterConfig.failure_policy of every point (the job's default restart keeps a recovery "
                    "point per client at its shard after every evaluation, and the replies since; exclude keeps none)")
    ap.add_argument("--interval", type=float, default=0.5, help="memory sampling interval (s)")
    ap.add_argument("--sampler-duty", type=float, default=0.1,
                    help="the memory sampler spends at most this fraction of the time sampling (1 = every "
                    "--interval s however long a sample takes: before 2026-12-02 it did, and kept about a core "
                    "busy at 512+ clients)")
    ap.add_argument("--malloc", choices=MALLOC_MODES, default="auto",
                    help="ClusterConfig.malloc for the --clients points (auto = fast)")
    ap.add_argument("--min-free-gib", type=float, default=0.6,
                    help="skip a point if available memory < this x actors + 2 GiB (shared machine)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each point wait up to this many s for other processes to go quiet (0 = never)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:  # the smoke run's defaults; options given explicitly still win
        ap.set_defaults(clients="1,4", grouped="4:2", epochs=(1, 1), train_subset=512)
        a = ap.parse_args(argv)

    def per_actor(v: str) -> int | str:
        return v if v == "auto" else int(v)

    points = [(int(c), per_actor(a.per_actor), a.malloc, "all", "none") for c in a.clients.split(",") if c.strip()]
    for g in (g.strip() for g in a.grouped.split(",") if g.strip()):
        parts = g.split(":")
        points.append((int(parts[0]), per_actor(parts[1]), parts[2] if len(parts) > 2 else a.malloc, "all", "none"))
    for v in (v.strip() for v in a.virtual.split(",") if v.strip()):
        n, k = v.split(":")
        points.append((int(n), "auto", a.malloc, int(k), "none"))
    for v in (v.strip() for v in a.link_points.split(",") if v.strip()):
        n, k = v.split(":")
        points.append((int(n), "auto", a.malloc, k if k == "all" else int(k), a.link))

    machine = C.machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-scaling-"))
    rows, skipped = [], []
    try:
        for clients, cpa, malloc, materialise, link in points:
            avail = C.psutil.virtual_memory().available / C.GIB
            procs = clients if cpa == "auto" else -(-clients // cpa)
            need = a.min_free_gib * (procs if materialise == "all" else min(procs, 8)) + 2
            print(f"- {clients} clients, {cpa} per actor, {materialise} materialised, link {link}, malloc {malloc} "
                  f"(available memory "
                  f"{avail:.1f} GiB) ...", flush=True)
            if a.quiet_wait > 0:
                C.wait_for_quiet(a.quiet_wait)
                avail = C.psutil.virtual_memory().available / C.GIB
            if avail < need:
                print(f"  skipped: needs ~{need:.0f} GiB free", flush=True)
                skipped.append({"clients": clients, "clients_per_actor": cpa, "malloc": malloc,
                                "available_gib": avail})
                continue
            row = C.retry_on_ray_failure(
                run_point, clients, cpa, malloc, a, tmp, materialise, link, reinit=False,
            )
            rows.append(row)
            print(
                f"  {row['sps_train_seconds']:.0f} samples/s, start-up {row['startup_s']:.1f} s, "
                f"peak PSS {row['peak_pss_gib']:.2f} GiB (USS {row['peak_uss_gib']:.2f}, RSS {row['peak_rss_gib']:.2f}), "
                f"other load {row['foreign_cpu_cores']:.2f} cores",
                flush=True,
            )
            print("  CPU s by role: " + ", ".join(f"{k} {v:.0f}" for k, v in row["cpu_s_by_role"].items() if v >= 1),
                  flush=True)
            record(rows, skipped, a, machine, partial=True)  # a later point that hangs or dies keeps these
            gc.collect()
            time.sleep(2)  # let the previous session's processes exit
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    record(rows, skipped, a, machine, partial=False)
    return 0


def record(rows: list[dict], skipped: list[dict], a, machine: dict, partial: bool) -> None:
    """Print and write the results of the points measured so far."""
    cols = [
        ("clients", "clients", "d"),
        ("clients_per_actor", "per actor", "d"),
        ("actors", "actors", "d"),
        ("materialise", "materialised/actor", ""),
        ("link", "link", ""),
        ("failure_policy", "failure policy", ""),
        ("malloc", "malloc", ""),
        ("samples", "samples", "d"),
        ("sps_train_seconds", "samples/s", ".0f"),
        ("ratio_to_8", "vs 8 clients", ".2f"),
        ("sps_last_epoch", "samples/s (last epoch span)", ".0f"),
        ("step_ms_median", "step ms", ".0f"),
        ("exchange_ms_median", "exchange ms", ".0f"),
        ("queue_ms_median", "queue ms", ".0f"),
        ("server_ms_median", "server ms", ".0f"),
        ("mean_merged", "merged/step", ".2f"),
        ("final_test_accuracy", "accuracy", ".3f"),
        ("startup_s", "start-up s", ".1f"),
        ("idle_ray_pss_gib", "idle Ray PSS GiB", ".2f"),
        ("peak_pss_gib", "peak PSS GiB", ".2f"),
        ("peak_uss_gib", "peak USS GiB", ".2f"),
        ("peak_rss_gib", "peak RSS GiB", ".2f"),
        ("peak_processes", "procs", "d"),
        ("parked_kib_per_client", "parked KiB/client", ".0f"),
        ("materialise_ms", "materialise ms", ".2f"),
        ("park_ms", "park ms", ".2f"),
        ("marginal_pss_kib_per_client", "PSS KiB per added idle client", ".0f"),
        ("failed", "failed", "d"),
        ("foreign_cpu_cores", "other load", ".2f"),
    ]
    def base_of(link: str) -> float | None:
        return next((r["sps_train_seconds"] for r in rows if r["clients"] == 8 and r["materialise"] == "all"
                     and r["clients_per_actor_requested"] == "auto" and r["link"] == link), None)

    for r in rows:  # against the 8-client row with the same link (the plain one for rows without a link)
        base = base_of(r["link"])
        r["ratio_to_8"] = r["sps_train_seconds"] / base if base else None
        r["marginal_pss_kib_per_client"] = marginal_pss_per_client(r, rows)
    setup = {
        "workload": "jobs/deprune.py defaults split over N clients: deprune 4 -> 128 over 2 + 1 epochs, "
        f"{a.train_subset} training samples in total, batch 32, 500 test samples shared among the clients",
        "model": "vgg_small",
        "dataset": "fashion-mnist",
        "train_subset": a.train_subset,
        "epochs_per_budget": list(a.epochs),
        "shards": 1,
        "cpu_cap": None,
        "quick": a.quick,
        "malloc": "ClusterConfig.malloc per row: fast = MALLOC_ARENA_MAX=2 and high mmap/trim thresholds (freed "
        "memory kept for reuse); lean = MALLOC_MMAP_THRESHOLD_=65536 (freed tensors back to the OS, page faults "
        "every step); auto = fast",
        "skipped": skipped,
        "memory": "peak over samples every interval s (or less often: at most sampler_duty of the time sampling) "
        "of the sum over the driver and all its descendant "
        "processes (the whole Ray session); PSS = no double counting of shared pages (headline), "
        "USS = private pages only (lower bound), RSS = double counts shared pages (upper bound); "
        "peaks of the three sums may come from different samples",
        "sps": "training samples / summary train_seconds (after start-up, evaluation included)",
        "ratio_to_8": "samples/s over the 8-client row's with the same link (targets: 32 and 1,024 clients >= 0.8)",
        "link_points": f"virtual-time link mode, --link {a.link}",
        "marginal_pss_kib_per_client": "(peak PSS of the row - peak PSS of the next smaller virtual row with the "
        "same processes and slots) / added clients, KiB",
        "sps_last_epoch": "samples of the last epoch / (last step end - first step start) over all clients",
        "step_phases": "medians over the last epoch's StepRows (ms): exchange = activation handed over until "
        "gradient held; queue = waiting at the shard; server = the shard's merged step",
        "startup_s": "summary startup_seconds: data load + actor creation until every actor is ready "
        "(ray.init not included: ray_init_s)",
    }
    if not partial:
        print()
        print(C.text_table(rows, cols))
    md = (
        "# Scaling: clients on one machine (1 shard)\n\n"
        f"The job's defaults (vgg_small, Fashion-MNIST {a.train_subset} samples in total, deprune 4 -> 128 over "
        f"{'+'.join(map(str, a.epochs))} epochs, batch 32) split over N clients; no CPU cap; fresh Ray per row. "
        "Memory: peak of the summed PSS (USS, RSS) of the driver and every Ray process, "
        f"sampled every {a.interval} s or less often (the sampler at most {a.sampler_duty:.0%} of the time). Targets: 32 clients >= 0.8 x the 8-client samples/s; 1,024 (virtual) "
        "clients: peak PSS <= 12 GB, start-up <= 60 s, samples/s >= 0.8 x the 8-client row's. Virtual rows: "
        "N:K = N clients over the auto processes, K materialised per process (`--materialise K`); link rows: "
        f"the same in virtual-time link mode (`--link {a.link} --link-mode virtual`). Memory per idle client: "
        "parked KiB/client (the numpy state kept per client) and the peak PSS a row adds per added client over "
        "the next smaller virtual row with the same processes.\n"
        f"Machine: {machine['cpu_count']} cores, {machine['memory_total_gib']} GiB, shared; created {C.now_iso()}"
        f"{' (partial: written after each point, the run went on)' if partial else ''}.\n\n"
        + C.md_table(rows, cols)
        + "\nCPU seconds by role (each process's latest CPU time seen by the sampler; the driver's includes the "
        "sampler's own):\n\n"
        + "\n".join(f"- {r['clients']} clients, {r['materialise']} materialised: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in r.get("cpu_s_by_role", {}).items() if v >= 1) for r in rows)
        + "\n"
    )
    result = {"benchmark": NAME, "created": C.now_iso(), "partial": partial, "setup": setup, "machine": machine,
              "rows": rows}
    C.write_results(NAME, result, md, a.out_dir)


if __name__ == "__main__":
    raise SystemExit(main())
