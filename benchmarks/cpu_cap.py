"""CPU cap: does a client capped at 40% of a core compute at 40% of the uncapped rate?

One client + one (uncapped) shard on Ray, fixed B=4, batch 16, a few dozen steps, for
each mechanism (cgroup CFS quota, duty-cycle throttle) and cap (0.4, 1.0), next to an
uncapped client ("none"); repeated interleaved. Per run, from the driver:

* client CPU: CPU seconds of the client actor process (psutil) over ``Cluster.run``;
  utilisation = that / the run's wall time (must be <= the cap);
* client-side time: sum of step latencies (the StepRows the run hands its callbacks)
  minus the shard's CPU time (the shard is single-threaded and uncapped, so its CPU time
  is its compute time; what is left is the client's forward/backward, its codec and any
  capping delay);
* client compute samples/s = samples / client-side time, and its ratio to the uncapped
  run (~0.4 expected at cap 0.4 if the client's compute is what is being capped);
* the mechanism's own counters: ``cap_info`` (throttle CPU/slept seconds) and, for
  cgroups, the ``cpu.stat`` of the client process's cgroup (found through
  ``/proc/<pid>/cgroup``): periods, throttled periods, throttled time.

Also, if ``--testbed``: the paper's testbed shape, 8 clients each capped at 0.4 of a
core, batch 16, 32 batches per epoch, with the module (B=4) and without (method none):
total training samples/s (the authors' framework: ~20.6 samples/s for 8 sources) and
peak memory of the session.

    python benchmarks/cpu_cap.py            # default, ~5 min
    python benchmarks/cpu_cap.py --quick    # smoke run
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

NAME = "cpu_cap"
ANCHOR_8_SOURCES_SPS = 20.6
ANCHOR_1_SOURCE_SPS = 21.5
ANCHOR_PEAK_RSS_PER_SOURCE_GB = 2.1
QUICK = {"repeats": 1, "steps": 8, "testbed_clients": 2, "testbed_batches": 4, "testbed_methods": "fixed"}


def _cpu(pid: int) -> float:
    try:
        t = C.psutil.Process(pid).cpu_times()
        return t.user + t.system
    except C.psutil.Error:
        return float("nan")


def _find_pid(title: str) -> int | None:
    """A session process whose Ray process title starts with ``title`` (e.g. ray::Shard)."""
    for p in C.session_processes():
        try:
            cmd = " ".join(p.cmdline())
        except C.psutil.Error:
            continue
        if cmd.startswith(title):
            return p.pid
    return None


def _cgroup_stat(pid: int) -> dict | None:
    """cpu.stat of the cgroup raysplit moved this client process into (v1 or v2), found
    through /proc/<pid>/cgroup; None while the process is in no raysplit cgroup."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for ln in lines:
        _, controllers, rel = ln.split(":", 2)
        if "/raysplit/" not in rel + "/":
            continue
        if "cpu" in controllers.split(","):  # v1: the cpu hierarchy
            path = Path("/sys/fs/cgroup/cpu") / rel.lstrip("/") / "cpu.stat"
        elif controllers == "":  # v2: the unified hierarchy
            path = Path("/sys/fs/cgroup") / rel.lstrip("/") / "cpu.stat"
        else:
            continue
        try:
            return {k: int(v) for k, v in (s.split() for s in path.read_text().splitlines() if s.strip())}
        except (OSError, ValueError):
            continue
    return None


def _delta(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return None
    return {k: b[k] - a.get(k, 0) for k in b}


def cap_run(mechanism: str, cap: float | None, batch: int, steps: int, tmp: Path) -> dict:
    import ray

    from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
    from raysplit.observability.callbacks import StepCollector
    from raysplit.runtime.driver import Cluster

    cfg = TrainConfig(
        method="fixed",
        budgets=(4,),
        epochs_per_budget=(1,),
        split=SplitConfig(model="vgg_small", codec="float32", torch_threads=1),
        batch_size=batch,
        train_subset=batch * steps,
        test_subset=batch,
        max_batches=steps,
        out=str(tmp / "cap"),
        progress=False,
    )
    cc = ClusterConfig(train=cfg, clients=1, shards=1, client_cpu=cap, cap_mechanism=mechanism, shard_threads=1)
    col = StepCollector()
    cl = Cluster(cc, callbacks=[col])
    cl.start()
    try:
        host = cl.hosts[0]
        cpid = cl.host_info[0]["pid"]
        spid = _find_pid("ray::Shard")
        info0 = ray.get(host.cap_info.remote())
        cg0 = _cgroup_stat(cpid)
        c0, s0, t0 = _cpu(cpid), _cpu(spid) if spid else float("nan"), time.perf_counter()
        s = cl.run()
        c1, s1, t1 = _cpu(cpid), _cpu(spid) if spid else float("nan"), time.perf_counter()
        cg1 = _cgroup_stat(cpid)
        info1 = ray.get(host.cap_info.remote())
    finally:
        cl.stop()
    rows = col.rows
    n = s.samples
    lat = sum(r.latency for r in rows)
    wall = t1 - t0
    client_cpu, shard_cpu = c1 - c0, s1 - s0
    client_side = lat - shard_cpu
    out = {
        "mechanism_requested": mechanism,
        "mechanism": s.cap_mechanism[0],
        "cap": cap,
        "samples": n,
        "steps": len(rows),
        "e2e_sps": n / lat,
        "step_ms_median": 1000 * C.median(r.latency for r in rows),
        "client_cpu_s": client_cpu,
        "client_cpu_ms_per_step": 1000 * client_cpu / len(rows),
        "client_util": client_cpu / wall,
        "shard_cpu_ms_per_step": 1000 * shard_cpu / len(rows),
        "client_side_ms_per_step": 1000 * client_side / len(rows),
        "client_compute_sps": n / client_side,
        "run_wall_s": wall,
        "startup_s": s.startup_seconds,
        "malloc": s.malloc,
    }
    if info1.get("cpu_seconds") is not None:
        out["throttle_cpu_s"] = info1["cpu_seconds"] - (info0.get("cpu_seconds") or 0.0)
        out["throttle_slept_s"] = info1["slept_seconds"] - (info0.get("slept_seconds") or 0.0)
    cg = _delta(cg0, cg1)
    if cg is not None:
        out["cg_nr_periods"] = cg.get("nr_periods")
        out["cg_nr_throttled"] = cg.get("nr_throttled")
        thr = cg.get("throttled_time", cg.get("throttled_usec", 0) * 1000)  # v1 ns, v2 us
        out["cg_throttled_s"] = thr / 1e9
    return out


def testbed_run(method: str, cap: float, mechanism: str, clients: int, batch: int, steps: int, epochs: int,
                tmp: Path) -> dict:
    from raysplit.config import ClusterConfig, SplitConfig, TrainConfig
    from raysplit.observability.callbacks import StepCollector
    from raysplit.runtime.driver import Cluster

    cfg = TrainConfig(
        method=method,
        budgets=(4,) if method != "none" else (128,),
        epochs_per_budget=(epochs,),
        split=SplitConfig(model="vgg_small", codec="float32"),
        batch_size=batch,
        train_subset=batch * steps * clients,
        test_subset=batch,
        max_batches=steps,
        out=str(tmp / "testbed"),
        progress=False,
    )
    cc = ClusterConfig(train=cfg, clients=clients, shards=1, client_cpu=cap, cap_mechanism=mechanism)
    mon = C.Monitor(interval=1.0).start()
    col = StepCollector()
    cl = Cluster(cc, callbacks=[col])
    try:
        cl.start()
        try:
            s = cl.run()
        finally:
            cl.stop()
    finally:
        mem = mon.stop()
    rows = col.rows
    # a StepRow's time is seconds since the run started at the step's end
    span = max(r.time for r in rows) - min(r.time - r.latency for r in rows)
    per_client = {}
    for r in rows:
        per_client.setdefault(r.client, []).append(r)
    return {
        "method": method,
        "budget": s.budgets[0],
        "clients": clients,
        "cap": cap,
        "mechanism": ",".join(s.cap_mechanism),
        "malloc": s.malloc,
        "batch": batch,
        "batches_per_epoch": steps,
        "epochs": epochs,
        "samples": s.samples,
        "steps": len(rows),
        "total_sps": s.samples / span,
        "total_sps_train_seconds": s.samples / s.train_seconds,
        "per_client_sps_median": C.median(
            sum(r.samples for r in rs) / sum(r.latency for r in rs) for rs in per_client.values()
        ),
        "startup_s": s.startup_seconds,
        "bytes_up_per_sample": s.bytes_up / s.samples,
        "peak_pss_gib": mem["peak_pss_gib"],
        "peak_rss_gib": mem["peak_rss_gib"],
        "foreign_cpu_cores": mem["foreign_cpu_cores"],
        "failed": len(s.failed_clients),
        "anchor_total_sps": ANCHOR_8_SOURCES_SPS if clients == 8 else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repeat, 8 steps, testbed of 2 clients x 4 batches, method fixed (unless "
                    "given explicitly)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="training steps per single-client run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--caps", default="0.4,1.0")
    ap.add_argument("--mechanisms", default="cgroup,throttle")
    ap.add_argument("--no-testbed", action="store_true", help="skip the 8-client testbed point")
    ap.add_argument("--testbed-clients", type=int, default=8)
    ap.add_argument("--testbed-batches", type=int, default=32)
    ap.add_argument("--testbed-epochs", type=int, default=1)
    ap.add_argument("--testbed-methods", default="fixed,none", help="fixed = module at B=4; none = no module")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each run wait up to this many s for other processes to go quiet (0 = never)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:  # smaller defaults; options given on the command line still win
        ap.set_defaults(**QUICK)
        a = ap.parse_args(argv)

    import ray

    from raysplit.runtime.cpu_cap import cgroup_available

    machine = C.machine_info()
    machine["cgroup_writable"] = cgroup_available()
    caps = [float(c) for c in a.caps.split(",")]
    mechs = [m for m in a.mechanisms.split(",") if m]
    if "cgroup" in mechs and not machine["cgroup_writable"]:
        print("no writable cgroup here: skipping the cgroup mechanism")
        mechs.remove("cgroup")
    configs = [("none", None)] + [(m, c) for m in mechs for c in caps]
    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-cap-"))
    init_s = C.ray_init_quiet()
    runs, testbed = [], []
    try:
        cap_run("none", None, a.batch_size, 4, tmp)  # warm-up (worker pool, imports)
        for rep in range(a.repeats):
            for mech, cap in configs:
                if a.quiet_wait > 0:
                    C.wait_for_quiet(a.quiet_wait)
                with C.ForeignCpu() as f:
                    r = cap_run(mech, cap, a.batch_size, a.steps, tmp)
                r.update(repeat=rep, foreign_cpu_cores=f.cores)
                runs.append(r)
                print(
                    f"  rep {rep} {mech:<8} cap {cap!s:<4}: client compute {r['client_compute_sps']:.0f} sps, "
                    f"util {r['client_util']:.2f}, e2e {r['e2e_sps']:.0f} sps (other load {f.cores:.2f})",
                    flush=True,
                )
        if not a.no_testbed:
            for method in [m for m in a.testbed_methods.split(",") if m]:
                if a.quiet_wait > 0:
                    C.wait_for_quiet(a.quiet_wait)
                tb = testbed_run(method, 0.4, "auto", a.testbed_clients, a.batch_size, a.testbed_batches,
                                 a.testbed_epochs, tmp)
                testbed.append(tb)
                print(f"  testbed {method}: {tb['total_sps']:.1f} samples/s total, peak PSS {tb['peak_pss_gib']:.2f} GiB",
                      flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    # ratio to the uncapped ("none") run of the same repeat, then medians per config
    for r in runs:
        base = next(x for x in runs if x["repeat"] == r["repeat"] and x["mechanism_requested"] == "none")
        r["ratio_compute"] = r["client_compute_sps"] / base["client_compute_sps"]
        r["ratio_e2e"] = r["e2e_sps"] / base["e2e_sps"]
    rows = []
    for mech, cap in configs:
        rs = [r for r in runs if r["mechanism_requested"] == mech and r["cap"] == cap]
        row = {"mechanism": rs[0]["mechanism"], "cap": cap if cap is not None else "none", "runs": len(rs),
               "malloc": rs[0].get("malloc"), "quiet_runs": sum(r["foreign_cpu_cores"] < 0.3 for r in rs)}
        for k in ("client_compute_sps", "ratio_compute", "client_util", "client_cpu_ms_per_step",
                  "client_side_ms_per_step", "shard_cpu_ms_per_step", "e2e_sps", "ratio_e2e", "step_ms_median",
                  "throttle_slept_s", "cg_nr_throttled", "cg_nr_periods", "cg_throttled_s", "foreign_cpu_cores"):
            vals = [r.get(k) for r in rs if r.get(k) is not None]
            row[k] = C.median(vals) if vals else None
        rows.append(row)

    cols = [
        ("mechanism", "mechanism", ""),
        ("cap", "cap", ""),
        ("runs", "runs", "d"),
        ("quiet_runs", "quiet runs", "d"),
        ("malloc", "malloc", ""),
        ("client_compute_sps", "client compute samples/s", ".0f"),
        ("ratio_compute", "ratio vs uncapped", ".3f"),
        ("client_util", "client CPU/wall", ".3f"),
        ("client_cpu_ms_per_step", "client CPU ms/step", ".1f"),
        ("client_side_ms_per_step", "client-side ms/step", ".1f"),
        ("shard_cpu_ms_per_step", "shard CPU ms/step", ".1f"),
        ("e2e_sps", "end-to-end samples/s", ".0f"),
        ("ratio_e2e", "e2e ratio", ".3f"),
        ("throttle_slept_s", "throttle slept s", ".2f"),
        ("cg_nr_throttled", "cgroup throttled periods", ".0f"),
        ("cg_nr_periods", "cgroup periods", ".0f"),
        ("foreign_cpu_cores", "other load", ".2f"),
    ]
    tcols = [
        ("method", "method", ""),
        ("budget", "B", "d"),
        ("clients", "clients", "d"),
        ("cap", "cap", ".1f"),
        ("mechanism", "mechanism", ""),
        ("malloc", "malloc", ""),
        ("batch", "batch", "d"),
        ("batches_per_epoch", "batches", "d"),
        ("samples", "samples", "d"),
        ("total_sps", "total samples/s", ".1f"),
        ("per_client_sps_median", "per-client samples/s", ".1f"),
        ("anchor_total_sps", "anchor total samples/s", ".1f"),
        ("bytes_up_per_sample", "up B/sample", ".0f"),
        ("startup_s", "start-up s", ".1f"),
        ("peak_pss_gib", "peak PSS GiB (session)", ".2f"),
        ("foreign_cpu_cores", "other load", ".2f"),
    ]
    setup = {
        "model": "vgg_small",
        "dataset": "fashion-mnist",
        "method": "fixed",
        "budget": 4,
        "codec": "float32",
        "batch_size": a.batch_size,
        "steps_per_run": a.steps,
        "repeats": a.repeats,
        "torch_threads": "client 1, shard 1",
        "shard": "uncapped",
        "quick": a.quick,
        "ray_init_seconds": init_s,
        "client_compute_sps": "samples / (sum of step latencies - shard CPU seconds)",
        "quiet_runs": "runs during which other processes used < 0.3 cores",
        "client_util": "client actor process CPU seconds / wall seconds of Cluster.run",
        "ratio_compute": "client_compute_sps / the uncapped run's of the same repeat; median over repeats",
        "testbed": "clients each capped at 0.4 of a core (mechanism auto), batch 16, batches per epoch as given; "
        "total samples/s = all samples / (first step start to last step end). Anchor (authors' framework, "
        f"same machine): {ANCHOR_8_SOURCES_SPS} samples/s for 8 sources, {ANCHOR_1_SOURCE_SPS} for one, "
        f"~{ANCHOR_PEAK_RSS_PER_SOURCE_GB} GB peak RSS per source",
    }
    print()
    print(C.text_table(rows, cols))
    if testbed:
        print()
        print(C.text_table(testbed, tcols))
    md = (
        "# CPU cap: capped vs uncapped client\n\n"
        f"1 client + 1 uncapped shard, vgg_small, fixed B=4, float32, batch {a.batch_size}, {a.steps} steps, "
        f"1 torch thread each; {a.repeats} interleaved repeats (median). Client compute samples/s = samples / "
        "(step latencies - shard CPU time); expected ratio ~0.4 at cap 0.4.\n"
        f"Created {C.now_iso()}.\n\n" + C.md_table(rows, cols)
    )
    if testbed:
        md += (
            "\n\n## Paper testbed shape\n\n"
            f"Each client capped at 0.4 of a core; the anchor (authors' framework) did ~{ANCHOR_8_SOURCES_SPS} "
            "samples/s in total for 8 sources and ~2.1 GB peak RSS per source.\n\n" + C.md_table(testbed, tcols)
        )
    result = {"benchmark": NAME, "created": C.now_iso(), "setup": setup, "machine": machine, "rows": rows,
              "runs": runs, "testbed": testbed}
    C.write_results(NAME, result, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
