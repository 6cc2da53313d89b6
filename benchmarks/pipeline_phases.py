"""Where a cluster step's time goes: 1 client + 1 shard, phase by phase, vs the local trainer.

The same training run (vgg_small, Fashion-MNIST subset, fixed B=4, float32, batch 32) is
timed in the local reference trainer and on Ray. Client and shard are raysplit's own
actor classes, subclassed here only to take time stamps (pickled by value, raysplit
untouched); all stamps come from one machine clock. Phases per step (medians, ms):

    fwd             client: head + compression + encode
    send->arrive    client's call until the shard's ``train`` coroutine starts
    arrive->compute until the shard's compute thread starts the step
    compute         shard: decode, tail forward/backward, SGD step, encode
    compute->reply  until the coroutine returns the result
    reply->bwd      until the client starts its backward
    bwd             client: decode, backward, SGD step
    bwd->next fwd   client bookkeeping between steps

Variant "pool-threads" reproduces the earlier design, in which the client's torch work
ran on whichever of the actor's pool threads Ray picked and the shard built its model
on the actor's main thread: more OpenMP thread teams than CPUs, which makes libgomp stop
spinning between ops.

    python benchmarks/pipeline_phases.py                  # 2 threads, both variants, ~2 min
    python benchmarks/pipeline_phases.py --threads 1
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

NAME = "pipeline_phases"
PHASES = ("fwd", "send->arrive", "arrive->compute", "compute", "compute->reply", "reply->bwd", "bwd", "bwd->next fwd")


def stamped_actor_classes(variant: str):
    """raysplit's ClientHost and Shard, subclassed to record per-step time stamps.
    Defined inside a function so that cloudpickle ships them by value."""
    import ray
    import torch

    from raysplit.runtime.client_actor import ClientHost
    from raysplit.runtime.shard import Shard
    from raysplit.training.server import SplitServer

    class StampedClientHost(ClientHost):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.stamps = []
            for c in self.clients.values():
                fwd, bwd = c.forward, c.backward

                def timed_fwd(*a, _f=fwd, **k):
                    t = time.time()
                    out = _f(*a, **k)
                    self.stamps.append({"f0": t, "f1": time.time()})
                    return out

                def timed_bwd(*a, _b=bwd, **k):
                    t = time.time()
                    out = _b(*a, **k)
                    self.stamps[-1].update(b0=t, b1=time.time())
                    return out

                c.forward, c.backward = timed_fwd, timed_bwd

        def _on(self, client, fn, *args):
            if variant == "pool-threads":  # the earlier design: run on the calling pool thread
                if self.cfg.torch_threads and torch.get_num_threads() != self.cfg.torch_threads:
                    torch.set_num_threads(self.cfg.torch_threads)
                return fn(*args)
            return super()._on(client, fn, *args)

        def get_stamps(self):
            return self.stamps

    class StampedShard(Shard):
        def __init__(self, cfg, shard_id, *a, **k):
            super().__init__(cfg, shard_id, *a, **k)
            if variant == "pool-threads":  # the earlier design: model built on the main thread
                self.server = SplitServer(cfg, shard_id, str(self.server.device))
            self.stamps = []

        async def train(self, buf, lr):
            self.stamps.append({"a": time.time()})
            out = await super().train(buf, lr)
            self.stamps[-1]["r"] = time.time()
            return out

        def _step(self, bufs, lr):
            self.stamps[-1]["s0"] = time.time()
            out = super()._step(bufs, lr)
            self.stamps[-1]["s1"] = time.time()
            return out

        async def get_stamps(self):
            return self.stamps

    return ray.remote(StampedClientHost), ray.remote(StampedShard)


def cluster_phases(cfg, threads: int, variant: str, skip: int = 5) -> dict:
    import ray

    import raysplit.runtime.cluster as rc
    from raysplit.config.cluster import ClusterConfig

    saved = rc.ClientActor, rc.ShardActor
    rc.ClientActor, rc.ShardActor = stamped_actor_classes(variant)
    try:
        cl = rc.Cluster(ClusterConfig(train=cfg, clients=1, shards=1, cap_mechanism="none", shard_threads=threads))
        cl.start(progress=False)
    finally:
        rc.ClientActor, rc.ShardActor = saved
    try:
        cl.run(progress=False)
        c = ray.get(cl.hosts[0].get_stamps.remote())
        s = ray.get(cl.shards[0].get_stamps.remote())
    finally:
        cl.stop()
    ph: dict[str, list[float]] = {k: [] for k in PHASES}
    for i in range(skip, min(len(c), len(s)) - 1):
        cs, ss = c[i], s[i]
        for k, v in zip(PHASES, (cs["f1"] - cs["f0"], ss["a"] - cs["f1"], ss["s0"] - ss["a"], ss["s1"] - ss["s0"],
                                 ss["r"] - ss["s1"], cs["b0"] - ss["r"], cs["b1"] - cs["b0"], c[i + 1]["f0"] - cs["b1"])):
            ph[k].append(1000 * v)
    out = {k: C.median(v) for k, v in ph.items()}
    out["step"] = C.median(1000 * r["latency"] for r in cl.rows[skip:])
    return out


def local_phases(cfg, skip: int = 5) -> dict:
    """The local trainer with its client/server methods wrapped by timers."""
    import pyarrow.parquet as pq

    from raysplit.local import run
    from raysplit.training.client import SplitClient
    from raysplit.training.server import SplitServer

    log: dict[str, list[float]] = {"fwd": [], "compute": [], "bwd": []}
    originals = (SplitClient.forward, SplitClient.backward, SplitServer.train_step)

    def timed(f, key):
        def g(self, *a, **k):
            t = time.perf_counter()
            out = f(self, *a, **k)
            log[key].append(1000 * (time.perf_counter() - t))
            return out

        return g

    SplitClient.forward, SplitClient.backward, SplitServer.train_step = (
        timed(originals[0], "fwd"), timed(originals[1], "bwd"), timed(originals[2], "compute"))
    try:
        run(cfg, progress=False)
    finally:
        SplitClient.forward, SplitClient.backward, SplitServer.train_step = originals
    rows = pq.read_table(Path(cfg.out) / "steps.parquet").to_pylist()
    out = {k: C.median(v[skip:]) for k, v in log.items()}
    out["step"] = C.median(1000 * r["latency"] for r in rows[skip:])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process (client and shard)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved (local, cluster variants) rounds")
    ap.add_argument("--variants", default="default,pool-threads", help="comma list of default, pool-threads")
    ap.add_argument("--train-subset", type=int, default=2048)
    ap.add_argument("--quiet-wait", type=float, default=20.0)
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    bad = set(variants) - {"default", "pool-threads"}
    if bad:
        ap.error(f"--variants: unknown {sorted(bad)}; allowed: default, pool-threads")

    import ray

    from raysplit.config import SplitConfig, TrainConfig

    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-phases-"))
    cfg = TrainConfig(method="fixed", budgets=(4,), epochs_per_budget=(1,), batch_size=32,
                      split=SplitConfig(model="vgg_small", codec="float32", torch_threads=a.threads),
                      train_subset=a.train_subset, test_subset=64, out=str(tmp / "local"))
    C.ray_init_quiet()
    runs: dict[str, list[dict]] = {"local": [], **{v: [] for v in variants}}
    try:
        for rep in range(a.repeats):
            if a.quiet_wait > 0:
                C.wait_for_quiet(a.quiet_wait)
            runs["local"].append(local_phases(cfg))
            for v in variants:
                runs[v].append(C.retry_on_ray_failure(cluster_phases, cfg, a.threads, v))
            print(f"  round {rep}: step ms local {runs['local'][-1]['step']:.1f}, "
                  + ", ".join(f"{v} {runs[v][-1]['step']:.1f}" for v in variants), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, rs in runs.items():
        row = {"run": name if name == "local" else f"cluster ({name})"}
        for k in (*PHASES, "step"):
            vals = [r[k] for r in rs if k in r]
            row[k] = C.median(vals) if vals else float("nan")
        rows.append(row)
    cols = [("run", "run", "")] + [(k, k, ".2f") for k in (*PHASES, "step")]
    table = C.text_table(rows, cols)
    print()
    print(table)
    setup = {"model": "vgg_small", "method": "fixed", "budget": 4, "codec": "float32", "batch_size": 32,
             "threads": a.threads, "train_subset": a.train_subset, "repeats": a.repeats, "variants": variants,
             "phases": "medians over steps (first 5 skipped), then median over rounds; ms"}
    md = (f"# Pipeline phases: 1 client + 1 shard, {a.threads} torch thread(s) per process\n\n"
          f"vgg_small, fixed B=4, float32, batch 32, {a.train_subset} samples; per-step medians in ms "
          f"(median of {a.repeats} interleaved rounds). Phases: see the script's docstring.\n\n"
          + C.md_table(rows, cols))
    C.write_results(NAME, {"benchmark": NAME, "setup": setup, "machine": C.machine_info(), "runs": runs,
                                   "rows": rows}, md, a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
