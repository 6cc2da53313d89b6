"""Where a cluster step's time goes: 1 client + 1 shard, phase by phase, vs the local trainer.

The same training run (vgg_small, Fashion-MNIST subset, fixed B=4, float32, batch 32) is
timed in the local reference trainer and on Ray. Nothing is patched: the phases come
from the timing columns of the StepRows every run hands its callbacks (collected by
``raysplit.observability.callbacks.StepCollector``; the same rows as the run
directory's ``steps.parquet``). Phases per step (medians, ms):

    fwd        client: head + compression + encode                       (forward_s)
    queue      waiting at the shard until its step began; 0 locally      (queue_s)
    server     the shard's step: decode, tail forward/backward, SGD      (server_s)
               step, encode
    transport  the rest of the round trip: the call reaching the shard,  (exchange_s -
               the hand-off to and from the shard's compute thread, the   queue_s -
               reply reaching the client; locally a function call         server_s)
    bwd        client: decode, backward, SGD step                        (backward_s)
    rest       inside the step but none of the above (CPU-cap pacing)    (latency - forward_s
                                                                          - exchange_s - backward_s)
    between    from a step's end to the client's next step's start in    (next time - next
               the same epoch: the client's bookkeeping between steps     latency - time)
    step       the whole step                                            (latency)

Cluster variants: ``default`` (the shipped ClusterConfig) and ClusterConfig overrides
written as its command-line options, ``option=value[+option=value...]``, e.g.
``openmp-spin=0`` (idle OpenMP threads of the actors sleep at once instead of spinning:
the cost behind the earlier design, whose torch work ran on whichever of the actor's pool
threads Ray picked, so that a process held more OpenMP thread teams than CPUs and libgomp
cut its spin to 100 iterations) or ``malloc=lean``. That earlier design itself cannot be
rebuilt from outside the runtime, so it is no longer a variant.

    python benchmarks/pipeline_phases.py                  # 2 threads, default + openmp-spin=0, ~2 min
    python benchmarks/pipeline_phases.py --threads 1 --variants default,malloc=lean
    python benchmarks/pipeline_phases.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "pipeline_phases"
PHASES = ("fwd", "queue", "server", "transport", "bwd", "rest", "between")
QUICK = {"repeats": 1, "train_subset": 320, "variants": "default"}


def step_phases(rows: list, skip: int = 5) -> dict:
    """Per-phase medians (ms) over a run's StepRows, leaving out each client's first
    ``skip`` steps (warm-up; fewer when the run is short)."""
    by_client: dict[int, list] = {}
    for r in rows:
        by_client.setdefault(r.client, []).append(r)
    ph: dict[str, list[float]] = {k: [] for k in (*PHASES, "step")}
    used = 0
    for rs in by_client.values():
        rs.sort(key=lambda r: r.step)
        k = min(skip, len(rs) // 2)
        for i in range(k, len(rs)):
            r = rs[i]
            used += 1
            ph["fwd"].append(r.forward_s)
            ph["queue"].append(r.queue_s)
            ph["server"].append(r.server_s)
            ph["transport"].append(r.exchange_s - r.queue_s - r.server_s)
            ph["bwd"].append(r.backward_s)
            ph["rest"].append(r.latency - r.forward_s - r.exchange_s - r.backward_s)
            ph["step"].append(r.latency)
            nxt = rs[i + 1] if i + 1 < len(rs) else None
            if nxt is not None and nxt.epoch == r.epoch:
                ph["between"].append((nxt.time - nxt.latency) - r.time)
    out = {k: 1000 * C.median(v) for k, v in ph.items()}
    out.update(steps=used, samples=sum(r.samples for r in rows))
    return out


def variant_argv(variant: str) -> list[str]:
    """``"openmp-spin=0+malloc=lean"`` -> ``["--openmp-spin", "0", "--malloc", "lean"]``; default -> []."""
    if variant == "default":
        return []
    argv = []
    for part in variant.split("+"):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"variant {variant!r}: expected default or option=value[+option=value...], "
                             "e.g. openmp-spin=0")
        argv += [f"--{key.strip()}", value.strip()]
    return argv


def cluster_config(variant: str, cfg, threads: int):
    """The ClusterConfig of a variant: 1 client + 1 uncapped shard with ``threads`` torch
    threads, changed by the variant's options (parsed as ``jobs/deprune.py`` parses them)."""
    from raysplit.config import ClusterConfig
    from raysplit.config.cli import ConfigParser

    p = ConfigParser(f"pipeline_phases.py --variants {variant}", "a cluster variant", [("cluster", ClusterConfig)],
                     defaults={"clients": 1, "shards": 1, "cap_mechanism": "none", "shard_threads": threads})
    try:
        argv = variant_argv(variant)
    except ValueError as e:
        p.error(str(e))
    p.parse(argv)
    return p.build(ClusterConfig, train=cfg)


def cluster_phases(cc) -> dict:
    from raysplit.observability.callbacks import StepCollector
    from raysplit.runtime.driver import run_cluster

    col = StepCollector()
    s, _ = run_cluster(cc, callbacks=[col])
    return step_phases(col.rows) | {"malloc": s.malloc, "cap_mechanism": s.cap_mechanism}


def local_phases(cfg) -> dict:
    from raysplit.local import run
    from raysplit.observability.callbacks import StepCollector

    col = StepCollector()
    run(cfg, callbacks=[col])
    return step_phases(col.rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process (client and shard)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved (local, cluster variants) rounds")
    ap.add_argument("--variants", default="default,openmp-spin=0",
                    help="comma list of cluster variants: default, or ClusterConfig options as "
                    "option=value[+option=value...] (e.g. openmp-spin=0, malloc=lean)")
    ap.add_argument("--train-subset", type=int, default=2048)
    ap.add_argument("--quiet-wait", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK['repeats']} round, {QUICK['train_subset']} samples, variant "
                    f"{QUICK['variants']} (unless given explicitly)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:  # smaller defaults; options given on the command line still win
        ap.set_defaults(**QUICK)
        a = ap.parse_args(argv)
    variants = list(dict.fromkeys(v.strip() for v in a.variants.split(",") if v.strip()))

    import ray

    from raysplit.config import SplitConfig, TrainConfig

    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-phases-"))
    cfg = TrainConfig(method="fixed", budgets=(4,), epochs_per_budget=(1,), batch_size=32,
                      split=SplitConfig(model="vgg_small", codec="float32", torch_threads=a.threads),
                      train_subset=a.train_subset, test_subset=64, out=str(tmp / "local"), progress=False)
    # every variant's configuration, checked before anything runs (a bad one exits here)
    configs = {v: cluster_config(v, cfg.replace(out=str(tmp / f"cluster-{i}")), a.threads)
               for i, v in enumerate(variants)}
    C.ray_init_quiet()
    runs: dict[str, list[dict]] = {"local": [], **{v: [] for v in variants}}
    try:
        for rep in range(a.repeats):
            if a.quiet_wait > 0:
                C.wait_for_quiet(a.quiet_wait)
            runs["local"].append(local_phases(cfg))
            for v in variants:
                runs[v].append(C.retry_on_ray_failure(cluster_phases, configs[v]))
            print(f"  round {rep}: step ms local {runs['local'][-1]['step']:.1f}, "
                  + ", ".join(f"{v} {runs[v][-1]['step']:.1f}" for v in variants), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, rs in runs.items():
        row = {"run": name if name == "local" else f"cluster ({name})"}
        for k in (*PHASES, "step"):
            vals = [r[k] for r in rs if k in r and not math.isnan(r[k])]
            row[k] = C.median(vals) if vals else float("nan")
        row["steps"] = sum(r["steps"] for r in rs)
        rows.append(row)
    cols = [("run", "run", "")] + [(k, k, ".2f") for k in (*PHASES, "step")] + [("steps", "steps", "d")]
    table = C.text_table(rows, cols)
    print()
    print(table)
    setup = {"model": "vgg_small", "method": "fixed", "budget": 4, "codec": "float32", "batch_size": 32,
             "threads": a.threads, "train_subset": a.train_subset, "repeats": a.repeats, "variants": variants,
             "cluster": {v: {k: val for k, val in c.to_dict().items() if k != "train"} for v, c in configs.items()},
             "source": "StepRow timing columns, collected by a run callback",
             "phases": "medians over each run's steps (first 5 per client skipped), then median over rounds; ms; "
                       "steps = steps the medians are over, summed over rounds"}
    md = (f"# Pipeline phases: 1 client + 1 shard, {a.threads} torch thread(s) per process\n\n"
          f"vgg_small, fixed B=4, float32, batch 32, {a.train_subset} samples; per-step medians in ms "
          f"(median of {a.repeats} interleaved rounds) from the StepRows' timing columns. "
          "Phases: see the script's docstring.\n"
          f"Created {C.now_iso()}.\n\n" + C.md_table(rows, cols))
    C.write_results(NAME, {"benchmark": NAME, "setup": setup, "machine": C.machine_info(), "runs": runs,
                           "rows": rows}, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
