"""Tenants side by side on one Ray cluster: 1, 2 and 4 at once (jobs/edge.py's runner).

Every tenant is the same small experiment (its own clients, shard, scheduler and
emulated Wi-Fi cell, in its own driver process and Ray namespace). Per point: each
tenant's training throughput (samples / training seconds, wall clock), its start-up
(actors ready, and the driver process's whole life), and the session's peak memory
(summed PSS of every process: the benchmark's Ray, every tenant's driver and actors)
per tenant. On 2 cores the tenants share the CPUs, so throughput per tenant falls about
as 1/K while the total holds; the figure of merit is the total and the memory per tenant.

    python benchmarks/tenants.py            # ~10 min
    python benchmarks/tenants.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "tenants"


def run_point(k: int, a, tmp: Path) -> dict:
    import ray

    from raysplit.runtime.tenancy import check_tenant, plan_tenants, run_tenants

    shared = {"clients": a.clients, "dataset": a.dataset, "train-subset": a.train_subset, "test-subset": 128,
              "epochs-per-budget": a.epochs, "batch-size": 32, "link": "wifi", "budgets": "4,128"}
    C.ray_init_quiet()
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        tenants = plan_tenants(str(k), shared, tmp / f"k{k}", cpus)
        for t in tenants:
            check_tenant(t)
        mon = C.Monitor(interval=1.0)
        mon.start()
        t0 = time.perf_counter()
        results = run_tenants(tenants, ray.get_runtime_context().gcs_address)
        wall = time.perf_counter() - t0
        mem = mon.stop()
    finally:
        ray.shutdown()
    per = []
    for r in results:
        s = r.summary or {}
        per.append({"tenant": r.name, "ok": r.ok, "error": r.error,
                    "samples_per_s": s.get("samples", 0) / s["train_seconds"] if s.get("train_seconds") else None,
                    "startup_s": s.get("startup_seconds"), "process_s": r.seconds, "samples": s.get("samples")})
    ok = [p for p in per if p["ok"]]
    return {
        "tenants": k, "ok": len(ok), "per_tenant": per,
        "samples_per_s_per_tenant": C.median(p["samples_per_s"] for p in ok),
        "samples_per_s_total": sum(p["samples_per_s"] for p in ok),
        "startup_s_median": C.median(p["startup_s"] for p in ok),
        "process_s_median": C.median(p["process_s"] for p in ok),
        "wall_s": wall, "peak_pss_gib": mem["peak_pss_gib"], "peak_pss_gib_per_tenant": mem["peak_pss_gib"] / k,
        "foreign_cpu_cores": mem["foreign_cpu_cores"],
    }


COLS = [("tenants", "tenants", "d"), ("ok", "finished", "d"), ("samples_per_s_per_tenant", "samples/s per tenant", ".1f"),
        ("samples_per_s_total", "samples/s total", ".1f"), ("startup_s_median", "start-up s (actors)", ".1f"),
        ("process_s_median", "tenant process s", ".1f"), ("peak_pss_gib", "peak PSS GiB", ".2f"),
        ("peak_pss_gib_per_tenant", "per tenant", ".2f")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 tenants (or --points) of 1 client on digits")
    ap.add_argument("--points", default="1,2,4", help="tenant counts")
    ap.add_argument("--clients", type=int, default=2, help="clients per tenant")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--train-subset", type=int, default=2048, help="training samples per tenant")
    ap.add_argument("--epochs", default="1,1", help="epochs per budget (deprune 4 -> 128)")
    ap.add_argument("--quiet-wait", type=float, default=30.0)
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.clients, a.dataset, a.train_subset, a.epochs = 1, "digits", 256, "1,1"
        a.points = a.points if a.points != ap.get_default("points") else "1,2"  # an explicit --points stays
    machine = C.machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-tenants-"))
    rows = []
    try:
        for k in (int(x) for x in a.points.split(",") if x):
            print(f"- {k} tenant(s) ...", flush=True)
            if a.quiet_wait > 0:
                C.wait_for_quiet(a.quiet_wait)
            row = run_point(k, a, tmp)
            rows.append(row)
            print(f"  {row['ok']}/{k} finished, {row['samples_per_s_per_tenant']:.1f} samples/s per tenant, "
                  f"peak PSS {row['peak_pss_gib']:.2f} GiB", flush=True)
            time.sleep(2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md = C.md_table(rows, COLS)
    print(md)
    C.write_results(NAME, {"machine": machine, "args": vars(a), "rows": rows, "when": C.now_iso()},
                    f"# {NAME}\n\n{md}\n", a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
