"""Pipeline efficiency: 1 client + 1 shard on Ray vs the local reference trainer.

Same model (vgg_small), data (a Fashion-MNIST subset), codec, budget, batch size and
torch threads on both sides; no CPU cap. The local trainer runs client and server in one
process; the cluster runs them in two actors that alternate (the client waits while the
shard computes), so one torch thread each is the fair comparison (2 threads is also
measured: then each side may use both cores during its turn).

Throughput = training samples / training time, where training time is the span of the
epochs' steps (from the first step's start to the last step's end, per epoch, summed):
it excludes Ray start-up, data loading and evaluation. ``samples / sum(step latency)``
and the cluster's ``samples / train_seconds`` (which includes evaluation and the
driver's per-epoch calls) are reported too. Runs are interleaved (local, cluster,
local, cluster, ...) on one Ray instance started once; the ratio is cluster / local
per pair, median over pairs. Each cluster setting can be run with several actor
variants: ``MALLOC[:spinN]``, the actors' ``ClusterConfig.malloc`` mode (auto, fast, lean)
and optionally ``ClusterConfig.openmp_spin`` = N (default variants: the shipped defaults,
libgomp's own spin count 300,000, and lean malloc); minor page faults per step are
recorded for both sides (lean's ~43k/step is what makes it slower).

    python benchmarks/pipeline_efficiency.py            # default variants, ~6 min
    python benchmarks/pipeline_efficiency.py --quick    # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "pipeline_efficiency"


def epoch_span_seconds(rows: list) -> float:
    """Sum over epochs of (last step end - first step start); ``time`` is a step's end."""
    by_epoch: dict[int, list] = {}
    for r in rows:
        by_epoch.setdefault(int(r.epoch), []).append(r)
    return sum(max(r.time for r in rs) - min(r.time - r.latency for r in rs) for rs in by_epoch.values())


def measure(rows: list, samples: int, skip: int) -> dict:
    """Throughputs from step rows; ``skip`` first steps of the run are left out of the
    steady-state figure (warm-up: allocator, first-touch of weights)."""
    lat = [r.latency for r in rows]
    steady = rows[skip:] if len(rows) > skip + 2 else rows
    n_steady = sum(r.samples for r in steady)
    return {
        "samples": samples,
        "steps": len(rows),
        "span_s": epoch_span_seconds(rows),
        "sps_span": samples / epoch_span_seconds(rows),
        "sps_latency": samples / sum(lat),
        "sps_steady": n_steady / sum(r.latency for r in steady),
        "step_ms_median": 1000 * C.median(lat),
        # where a step's time goes (medians, ms): the exchange includes the server's step
        "forward_ms": 1000 * C.median(r.forward_s for r in rows),
        "exchange_ms": 1000 * C.median(r.exchange_s for r in rows),
        "server_ms": 1000 * C.median(r.server_s for r in rows),
        "backward_ms": 1000 * C.median(r.backward_s for r in rows),
    }


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (/proc/<pid>/stat field 10)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


def session_usage() -> tuple[float, int]:
    """(CPU seconds, minor page faults) of the driver and every live descendant (the
    whole Ray session when Ray was started by this process)."""
    cpu, faults = 0.0, 0
    for p in C.session_processes():
        try:
            t = p.cpu_times()
        except C.psutil.Error:
            continue
        cpu += t.user + t.system
        faults += minor_faults(p.pid)
    return cpu, faults


def run_local(cfg) -> dict:
    from raysplit.local import run

    from raysplit.observability.callbacks import StepCollector

    col = StepCollector()
    c0, f0 = C.psutil.Process().cpu_times(), minor_faults(C.os.getpid())
    t = time.perf_counter()
    s = run(cfg, callbacks=[col])
    wall = time.perf_counter() - t
    c1, f1 = C.psutil.Process().cpu_times(), minor_faults(C.os.getpid())
    out = measure(col.rows, s.samples, skip=3)
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    out.update(
        wall_s=wall,
        bytes_up=s.bytes_up,
        bytes_down=s.bytes_down,
        cpu_ms_per_sample=1000 * cpu / s.samples,
        faults_per_step=(f1 - f0) / len(col.rows),
    )
    return out


VARIANT = re.compile(r"^(auto|fast|lean)(?::spin(\d+))?$")


def parse_variant(v: str) -> tuple[str, int | None]:
    """"fast:spin30000" -> ("fast", 30000); "lean" -> ("lean", None)."""
    m = VARIANT.match(v)
    if m is None:
        raise ValueError(f"variant {v!r}; allowed: auto|fast|lean, optionally followed by :spinN (e.g. fast:spin30000)")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def run_cluster(cfg, threads: int, variant: str = "auto") -> dict:
    """``variant``: ``MALLOC[:spinN]`` (ClusterConfig.malloc and openmp_spin)."""
    from raysplit.config.cluster import ClusterConfig
    from raysplit.runtime.driver import Cluster

    malloc, spin = parse_variant(variant)
    cc = ClusterConfig(train=cfg, clients=1, shards=1, client_cpu=None, cap_mechanism="none", shard_threads=threads,
                       malloc=malloc, openmp_spin=spin)
    from raysplit.observability.callbacks import StepCollector

    col = StepCollector()
    cl = Cluster(cc, callbacks=[col])
    t = time.perf_counter()
    cl.start()
    try:
        c0, f0 = session_usage()
        s = cl.run()
        c1, f1 = session_usage()
    finally:
        cl.stop()
    wall = time.perf_counter() - t
    out = measure(col.rows, s.samples, skip=3)
    out.update(
        wall_s=wall,
        bytes_up=s.bytes_up,
        bytes_down=s.bytes_down,
        startup_s=s.startup_seconds,
        train_seconds=s.train_seconds,
        sps_train_seconds=s.samples / s.train_seconds,
        cap_mechanism=s.cap_mechanism,
        malloc=s.malloc,
        cpu_ms_per_sample=1000 * (c1 - c0) / s.samples,
        faults_per_step=(f1 - f0) / len(col.rows),
    )
    return out


def quiet(p: dict, limit: float = 0.3) -> bool:
    return max(p["local"]["foreign_cpu_cores"], p["cluster"]["foreign_cpu_cores"]) < limit


def summarize(runs: list[dict], batch_sizes: list[int], threads: list[int], variants: list[str]) -> list[dict]:
    rows = []
    for bs, thr, var in ((b, t, v) for b in batch_sizes for t in threads for v in variants):
        pairs = [p for p in runs if p["batch_size"] == bs and p["threads"] == thr and p["variant"] == var]
        if not pairs:
            continue
        med = lambda side, k: C.median(p[side][k] for p in pairs)  # noqa: E731
        qp = [p for p in pairs if quiet(p)]
        rows.append(
            {
                "batch_size": bs,
                "threads": thr,
                "actors": var,
                "pairs": len(pairs),
                "local_sps": med("local", "sps_span"),
                "cluster_sps": med("cluster", "sps_span"),
                "ratio": C.median(p["ratio_span"] for p in pairs),
                "ratio_min": min(p["ratio_span"] for p in pairs),
                "ratio_max": max(p["ratio_span"] for p in pairs),
                "quiet_pairs": len(qp),
                "ratio_quiet": C.median(p["ratio_span"] for p in qp) if qp else None,
                "ratio_steady": C.median(p["ratio_steady"] for p in pairs),
                "local_step_ms": med("local", "step_ms_median"),
                "cluster_step_ms": med("cluster", "step_ms_median"),
                **{f"{side}_{k}_ms": med(side, f"{k}_ms") for side in ("local", "cluster")
                   for k in ("forward", "exchange", "server", "backward")},
                "cluster_train_seconds_sps": med("cluster", "sps_train_seconds"),
                "cluster_startup_s": med("cluster", "startup_s"),
                "local_cpu_ms": med("local", "cpu_ms_per_sample"),
                "cluster_cpu_ms": med("cluster", "cpu_ms_per_sample"),
                "local_faults": med("local", "faults_per_step"),
                "cluster_faults": med("cluster", "faults_per_step"),
                "foreign_cpu_cores": C.median(
                    max(p["local"]["foreign_cpu_cores"], p["cluster"]["foreign_cpu_cores"]) for p in pairs
                ),
            }
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1 thread, 128 train / 32 test samples")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved (local, cluster) pairs per setting")
    ap.add_argument("--threads", default="1,2", help="torch threads per process to test, comma list")
    ap.add_argument("--batch-sizes", default="32", help="comma list of batch sizes")
    ap.add_argument("--train-subset", type=int, default=2048)
    ap.add_argument("--test-subset", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--codec", default="float32")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each pair wait up to this many s for other processes to go quiet (0 = never)")
    ap.add_argument("--variants", default="auto,auto:spin300000,lean",
                    help="cluster actors, comma list of MALLOC[:spinN]: ClusterConfig.malloc (auto, fast, lean) "
                    "and optionally ClusterConfig.openmp_spin=N")
    ap.add_argument("--out-dir", type=Path, default=None, help="results folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    if a.quick:  # smaller defaults; options given on the command line still win
        ap.set_defaults(repeats=1, train_subset=128, test_subset=32, threads="1")
        a = ap.parse_args(argv)

    import ray

    from raysplit.config import SplitConfig, TrainConfig

    threads = [int(t) for t in a.threads.split(",")]
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        try:
            parse_variant(v)
        except ValueError as e:
            ap.error(f"--variants: {e}")
    batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
    machine = C.machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-pipe-"))
    init_s = C.ray_init_quiet()
    print(f"ray.init: {init_s:.1f} s; {a.repeats} interleaved pairs per setting")
    runs: list[dict] = []
    error = None
    try:
        for bs in batch_sizes:
            subset = a.train_subset - a.train_subset % bs
            for thr in threads:
                cfg = TrainConfig(
                    method="fixed",
                    budgets=(a.budget,),
                    epochs_per_budget=(a.epochs,),
                    split=SplitConfig(model="vgg_small", codec=a.codec, torch_threads=thr),
                    batch_size=bs,
                    train_subset=subset,
                    test_subset=a.test_subset,
                    out=str(tmp / "run"),
                    progress=False,
                )
                # warm-up pair (not recorded): first-import costs, page cache, Ray's worker pool
                run_local(cfg.replace(train_subset=4 * bs))
                C.retry_on_ray_failure(run_cluster, cfg.replace(train_subset=4 * bs), thr)
                for rep in range(a.repeats):
                    for var in variants:
                        if a.quiet_wait > 0:
                            C.wait_for_quiet(a.quiet_wait)
                        with C.ForeignCpu() as fl:
                            loc = run_local(cfg)
                        with C.ForeignCpu() as fc:
                            clu = C.retry_on_ray_failure(run_cluster, cfg, thr, var)
                        assert loc["bytes_up"] == clu["bytes_up"], "cluster and local sent different bytes"
                        pair = {
                            "batch_size": bs,
                            "threads": thr,
                            "variant": var,
                            "repeat": rep,
                            "local": {**loc, "foreign_cpu_cores": fl.cores},
                            "cluster": {**clu, "foreign_cpu_cores": fc.cores},
                            "ratio_span": clu["sps_span"] / loc["sps_span"],
                            "ratio_latency": clu["sps_latency"] / loc["sps_latency"],
                            "ratio_steady": clu["sps_steady"] / loc["sps_steady"],
                        }
                        runs.append(pair)
                        print(
                            f"  B={bs} threads={thr} actors {var} rep {rep}: local {loc['sps_span']:.0f} sps, "
                            f"cluster {clu['sps_span']:.0f} sps, ratio {pair['ratio_span']:.3f}; page faults/step "
                            f"{loc['faults_per_step']:.0f} vs {clu['faults_per_step']:.0f} "
                            f"(other load {fl.cores:.2f}/{fc.cores:.2f} cores)",
                            flush=True,
                        )
    except Exception as e:  # noqa: BLE001 - keep (and write) what was measured
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        print(f"! run aborted: {error}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(runs, batch_sizes, threads, variants)

    cols = [
        ("batch_size", "batch", "d"),
        ("threads", "threads", "d"),
        ("actors", "actors", ""),
        ("pairs", "pairs", "d"),
        ("local_sps", "local samples/s", ".0f"),
        ("cluster_sps", "cluster samples/s", ".0f"),
        ("ratio", "ratio (median)", ".3f"),
        ("ratio_min", "min", ".3f"),
        ("ratio_max", "max", ".3f"),
        ("quiet_pairs", "quiet pairs", "d"),
        ("ratio_quiet", "ratio (quiet pairs)", ".3f"),
        ("ratio_steady", "ratio steady", ".3f"),
        ("local_step_ms", "local ms/step", ".1f"),
        ("cluster_step_ms", "cluster ms/step", ".1f"),
        ("local_exchange_ms", "local exchange ms", ".1f"),
        ("cluster_exchange_ms", "cluster exchange ms", ".1f"),
        ("local_server_ms", "local server ms", ".1f"),
        ("cluster_server_ms", "cluster server ms", ".1f"),
        ("cluster_train_seconds_sps", "cluster sps (train_seconds)", ".0f"),
        ("cluster_startup_s", "startup s", ".1f"),
        ("local_cpu_ms", "local CPU ms/sample", ".2f"),
        ("cluster_cpu_ms", "cluster CPU ms/sample", ".2f"),
        ("local_faults", "local page faults/step", ".0f"),
        ("cluster_faults", "cluster page faults/step", ".0f"),
        ("foreign_cpu_cores", "other load (cores)", ".2f"),
    ]
    setup = {
        "model": "vgg_small",
        "dataset": "fashion-mnist",
        "method": "fixed",
        "budget": a.budget,
        "codec": a.codec,
        "epochs": a.epochs,
        "train_subset": a.train_subset,
        "test_subset": a.test_subset,
        "batch_sizes": batch_sizes,
        "threads": threads,
        "repeats": a.repeats,
        "quick": a.quick,
        "cpu_cap": None,
        "throughput": "training samples / sum over epochs of (last step end - first step start); "
        "excludes Ray start-up, data loading, evaluation",
        "ratio": "cluster / local per interleaved pair, median over pairs (targets: >= 0.95 at 1 thread, "
        ">= 0.90 at 2)",
        "step_phases": "medians of the StepRow timing columns (ms): exchange = handing the activation over "
        "until holding the gradient, server = the shard's step inside it; exchange - server is the transport's "
        "cost (object store, scheduling, waking the other process)",
        "ratio_steady": "same from samples / sum(step latency) without the first 3 steps",
        "quiet_pairs": "pairs during which other processes used < 0.3 cores (ratio_quiet: their median)",
        "ray_init_seconds": init_s,
        "variants": variants,
        "malloc": "variant = MALLOC[:spinN]: ClusterConfig.malloc of the actors (fast: MALLOC_ARENA_MAX=2 and "
        "high mmap/trim thresholds; lean: MALLOC_MMAP_THRESHOLD_=65536, freed tensors go back to the OS; auto: "
        "fast for 1 client) and ClusterConfig.openmp_spin (GOMP_SPINCOUNT in the actors; none = libgomp default)",
        "page_faults_per_step": "minor page faults per training step: local = the trainer process; cluster = "
        "the whole Ray session during Cluster.run",
        "cpu_ms_per_sample": "local: the trainer process's CPU time / samples; cluster: CPU time of the whole "
        "Ray session (driver, raylet, gcs, agents, client and shard actors) during Cluster.run / samples",
        "other_load": "CPU cores used by processes outside this benchmark during the run (shared machine)",
    }
    table = C.text_table(rows, cols)
    print()
    print(table)
    md = (
        f"# Pipeline efficiency: 1 client + 1 shard on Ray vs local trainer\n\n"
        f"vgg_small, Fashion-MNIST {a.train_subset} samples, method fixed B={a.budget}, codec {a.codec}, "
        f"{a.epochs} epoch(s), no CPU cap; {a.repeats} interleaved pairs per row; "
        f"ratio = cluster/local training samples/s (targets >= 0.95 at 1 thread, >= 0.90 at 2).\n"
        f"Machine: {machine['cpu_count']} cores, shared; created {C.now_iso()}.\n\n" + C.md_table(rows, cols)
    )
    if error:
        md += f"\n\nINCOMPLETE: {error}\n"
    result = {"benchmark": NAME, "created": C.now_iso(), "setup": setup, "machine": machine, "rows": rows,
              "runs": runs, "error": error}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
