"""What reliability costs and how fast each fault is survived.

One Ray instance, one small run shape (Fashion-MNIST subset, 4 clients on 2 shards, batch
32, deprune 4 -> 128 over 1 + 1 epochs, each client capped at 0.5 of a core (0.25 with --quick) by the
throttle so that a kill lands mid-epoch), run several ways:

* **overhead**: no recovery (``--failure-policy exclude``), recovery on (the default:
  recovery points, step logs, shard snapshots, the scheduler's journal), and recovery
  plus ``--checkpoint-every 1``; interleaved, ``--repeats`` times; training seconds per
  epoch and the checkpoint's size;
* **faults**: a client actor, a shard and the scheduler are each SIGKILLed through their
  pid mid-epoch; the whole job (driver and everything) is SIGKILLed and resumed with
  ``--resume``. For each: the outcome, samples lost and counted twice (from the steps
  table: every (client, step) must appear exactly once), and the recovery time (kill ->
  the killed client's first new step; kill -> the first step the restarted shard serves;
  kill -> the restarted scheduler has reloaded its journal; for the job: the resumed
  run's start-up and the steps it redid).

    python benchmarks/recovery.py            # records benchmarks/results/recovery.{json,md}
    python benchmarks/recovery.py --quick    # smoke run (digits, short)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine_info, md_table, ray_init_quiet, text_table, write_results  # noqa: E402

from raysplit.config import ClusterConfig, SplitConfig, TrainConfig  # noqa: E402
from raysplit.observability.callbacks import Callback  # noqa: E402


def shape(quick: bool, out: Path) -> ClusterConfig:
    train = TrainConfig(
        method="deprune", split=SplitConfig(model="vgg_small", torch_threads=1, seed=7),
        dataset="digits" if quick else "fashion-mnist", image_size=16 if quick else None, budgets=(4, 128),
        epochs_per_budget=(1, 1), batch_size=16 if quick else 32, max_batches=20 if quick else None,
        train_subset=None if quick else 4096, test_subset=64 if quick else 256, out=str(out), progress=False,
    )
    # capped (throttle) so that an epoch lasts long enough for a kill to land inside it
    return ClusterConfig(train=train, clients=4, shards=2, client_cpu=0.25 if quick else 0.5, cap_mechanism="throttle")


class Watch(Callback):
    """Kills ``pid()`` once ``client`` has recorded ``after`` steps; notes restart events."""

    def __init__(self, pid=None, client: int = 0, after: int = 0) -> None:
        self.pid, self.client, self.after = pid, client, after
        self.seen, self.killed_at, self.events = 0, None, []

    def on_steps(self, rows) -> None:
        self.seen += sum(r.client == self.client for r in rows)
        if self.pid is not None and self.killed_at is None and self.seen >= self.after:
            os.kill(self.pid(), signal.SIGKILL)
            self.killed_at = time.time()

    def on_event(self, event) -> None:
        if type(event).__name__ == "Restarted":
            self.events.append((time.time(), event))


def once_each(out: Path, clients: int, per_client: int) -> dict:
    """Steps (and their samples) lost and counted twice, from the steps table: every
    (client, step) of the schedule must be there exactly once."""
    import pyarrow.parquet as pq

    st = pq.read_table(out / "steps.parquet").to_pandas()
    counts = st.groupby(["client", "step"]).size()
    want = {(c, s) for c in range(clients) for s in range(1, per_client + 1)}
    return {"steps_recorded": len(st), "lost_steps": len(want - set(counts.index)),
            "twice_steps": int((counts - 1).sum()), "samples": int(st["samples"].sum()), "rows": st}


def run_one(cc: ClusterConfig, watch: Watch | None = None):
    """Start, train, stop; the watch (if any) reaches the actors through ``watch.cluster``
    and is armed to kill a third into its client's first epoch (rows reach the driver a
    second or two after their step, so the kill lands well inside the run)."""
    from raysplit.runtime.driver import Cluster

    cluster = Cluster(cc, [watch] if watch else [])
    cluster.start()
    if watch is not None:
        watch.cluster = cluster
        watch.after = max(2, cluster.steps_per_epoch[watch.client] // 3)
    try:
        summary = cluster.run()
    finally:
        cluster.stop()
    return summary, cluster


VARIANTS = {  # name: (cluster options, checkpoint_every)
    "no recovery (--failure-policy exclude)": (dict(failure_policy="exclude", max_failures=0), 0),
    "recovery on (default)": ({}, 0),
    "recovery + --checkpoint-every 1": ({}, 1),
}


def overhead(base: ClusterConfig, tmp: Path, repeats: int) -> list[dict]:
    import statistics

    rows = {name: [] for name in VARIANTS}
    for r in range(repeats):  # interleaved, so the machine's noise spreads over all variants
        for k, (name, (kw, ck)) in enumerate(VARIANTS.items()):
            out = tmp / f"overhead-{r}-{k}"
            cc = base.replace(train=base.train.replace(out=str(out), checkpoint_every=ck), **kw)
            summary, _ = run_one(cc)
            size = sum(p.stat().st_size for p in (out / "checkpoints").rglob("state.pt")) if ck else 0
            rows[name].append({"s_per_epoch": summary.train_seconds / summary.epochs,
                               "ckpt_mb": size / max(summary.epochs, 1) / 1e6})
            print(f"  {name}: {rows[name][-1]['s_per_epoch']:.2f} s/epoch", flush=True)
    base_s = statistics.median(x["s_per_epoch"] for x in rows["no recovery (--failure-policy exclude)"])
    return [{"variant": name, "s_per_epoch": statistics.median(x["s_per_epoch"] for x in xs),
             "vs_none": statistics.median(x["s_per_epoch"] for x in xs) / base_s,
             "ckpt_mb_per_epoch": statistics.median(x["ckpt_mb"] for x in xs)} for name, xs in rows.items()]


def fault(base: ClusterConfig, tmp: Path, kind: str) -> dict:
    import ray

    out = tmp / f"kill-{kind.split()[0]}"
    cc = base.replace(train=base.train.replace(out=str(out)))
    pid, client = {
        "client actor": (lambda: w.cluster.host_info[1]["pid"], 1),
        "shard": (lambda: w.cluster.shard_info[1]["pid"], 1),
        "scheduler": (lambda: ray.get(w.cluster.scheduler.pid.remote()), 0),
    }[kind]
    w = Watch(pid, client=client)
    summary, cluster = run_one(cc, w)
    check = once_each(out, cc.clients, cluster.steps_per_epoch[client] * cluster.plan.total_epochs)
    st = check.pop("rows")
    kill_rel = w.killed_at - cluster.t0  # rows' time is seconds since the run's t0
    component = kind.split()[0]
    events = [(t, e) for t, e in w.events if e.component == component]
    if len(events) != 1:
        raise RuntimeError(f"{kind}: expected one restart, saw {len(events)} (the kill landed at "
                           f"{kill_rel:.1f} s into the run)")
    ((t_ev, ev),) = events
    if component == "client":  # its first new step (past what it restored and replayed)
        recovery = float(st[(st.client == client) & (st.step > ev.step)]["time"].min()) - kill_rel
        detail = f"{ev.detail}, {ev.replayed} steps replayed"
    elif component == "shard":  # the first step the restarted shard served
        recovery = float(st[(st.shard == 1) & (st.time > kill_rel)]["time"].min()) - kill_rel
        detail = ev.detail
    else:  # the restarted scheduler has its journal back (clients need it only between segments)
        recovery = t_ev - w.killed_at
        detail = ev.detail
    return {"fault": f"{kind} SIGKILLed mid-epoch", "outcome": "completed" if not summary.failed_clients else
            f"failed clients {summary.failed_clients}", "detail": detail, "recovery_s": recovery,
            "restore_s": ev.seconds, **check}


def whole_job(base: ClusterConfig, tmp: Path, quick: bool) -> dict:
    import pyarrow.parquet as pq
    import ray

    out = tmp / "job"
    t = base.train
    args = [sys.executable, "jobs/deprune.py", "--address", ray.get_runtime_context().gcs_address, "--dataset",
            t.dataset, "--budgets", "4,128", "--epochs-per-budget", "1,1", "--batch-size", str(t.batch_size),
            "--seed", str(t.split.seed), "--threads", "1", "--clients", str(base.clients), "--shards",
            str(base.shards), "--client-cpu", str(base.client_cpu), "--cap-mechanism", base.cap_mechanism,
            "--test-subset", str(t.test_subset), "--train-subset", "all" if t.train_subset is None else
            str(t.train_subset), "--no-progress", "--out", str(out)]
    if t.image_size:
        args += ["--image-size", str(t.image_size)]
    if t.max_batches:
        args += ["--max-batches", str(t.max_batches)]
    log = open(tmp / "job.log", "w")
    job = subprocess.Popen(args + ["--checkpoint-every", "1"], cwd=ROOT, stdout=log, stderr=log,
                           start_new_session=True)

    def epochs():
        parts = sorted((out / "steps.parquet").glob("part-*.parquet"))
        return {e for p in parts for e in pq.read_table(p, columns=["epoch"]).column("epoch").to_pylist()}

    t0 = time.monotonic()
    while not ((out / "checkpoints" / "epoch_0" / "state.pt").is_file() and 1 in epochs()):
        if time.monotonic() - t0 > 600 or job.poll() is not None:
            raise RuntimeError(f"the job did not reach epoch 1 (see {tmp / 'job.log'})")
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    before = pq.read_table(out / "steps.parquet").num_rows
    t1 = time.perf_counter()
    res = subprocess.run(args + ["--resume", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t1
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    per_client = summary["steps"] // base.clients
    check = once_each(out, base.clients, per_client)
    st = check.pop("rows")
    kept = int((st["epoch"] == 0).sum())
    return {"fault": "whole job SIGKILLed (driver and all actors), then --resume", "outcome":
            "completed" if not summary["failed_clients"] else "failed clients", "detail":
            f"resumed from {summary['resumed_from']}; {before - kept} recorded steps after it redone",
            "recovery_s": summary["startup_seconds"], "restore_s": summary["startup_seconds"],
            "resume_wall_s": wall, **check}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run: digits, 20 batches, 1 repeat unless --repeats")
    ap.add_argument("--repeats", type=int, default=None, help="overhead runs per variant, interleaved (default 3; "
                                                              "1 with --quick)")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: overhead,client,shard,scheduler,job")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="raysplit-bench-recovery-"))
    ray_init_quiet(num_cpus=4)
    base = shape(a.quick, tmp / "x")
    try:
        repeats = a.repeats if a.repeats is not None else (1 if a.quick else 3)
        ovh = [] if "overhead" in skip else overhead(base, tmp, repeats)
        faults = []
        for kind, key in (("client actor", "client"), ("shard", "shard"), ("scheduler", "scheduler"), ("job", "job")):
            if key in skip:
                continue
            try:  # one fault that could not be measured must not lose the others' rows
                faults.append(whole_job(base, tmp, a.quick) if key == "job" else fault(base, tmp, kind))
            except RuntimeError as e:
                print(f"  {kind}: not measured: {e}", flush=True)
                faults.append({"fault": kind, "outcome": f"not measured: {str(e)[:200]}", "lost_steps": -1,
                               "twice_steps": -1, "recovery_s": float("nan"), "detail": ""})
    finally:
        ray.shutdown()
    cols_o = [("variant", "run", ""), ("s_per_epoch", "training s/epoch", ".2f"), ("vs_none", "vs no recovery", ".3f"),
              ("ckpt_mb_per_epoch", "checkpoint MB/epoch", ".1f")]
    cols_f = [("fault", "fault", ""), ("outcome", "outcome", ""), ("lost_steps", "steps lost", "d"),
              ("twice_steps", "steps counted twice", "d"), ("recovery_s", "recovery s", ".2f"),
              ("detail", "how", "")]
    print(text_table(ovh, cols_o) if ovh else "", "\n\n" + text_table(faults, cols_f))
    md = (f"Run shape: {base.clients} clients, {base.shards} shards, {base.train.dataset}, batch "
          f"{base.train.batch_size}, client cap {base.client_cpu} (throttle).\n\n" + (md_table(ovh, cols_o) if ovh
          else "") + "\n\n" + md_table(faults, cols_f))
    write_results("recovery" + ("_quick" if a.quick else ""), {"machine": machine_info(), "overhead": ovh,
                                                                "faults": faults, "quick": a.quick}, md, a.out_dir)
    return 0 if all(f["lost_steps"] == 0 and f["twice_steps"] == 0 for f in faults) else 1


if __name__ == "__main__":
    sys.exit(main())
