"""Runs for the training-method benchmarks (prune_vs_scratch, bottlefit, compression_regime):
each run is a job's command line, run on the cluster as ``python jobs/<job>.py ARGS`` would
run it (one private Ray for the whole benchmark), or with ``--local`` as
``python -m raysplit.local ARGS`` (the same loop in one process, for smoke tests).

A run's record keeps its command, its summary and its per-epoch rows (test accuracy,
bytes), so every figure a benchmark reports can be traced to the run that measured it.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "jobs"))
sys.path.insert(0, str(HERE.parent))

#: the cluster options, which the local trainer does not take
CLUSTER_FLAGS = ("--clients", "--shards", "--clients-per-actor", "--shard-device", "--shard-cpus", "--shard-threads",
                 "--mode", "--policy", "--client-cpu", "--cap-mechanism", "--shard-sync", "--sync-every")


@dataclass
class Run:
    """One finished run: what was run and what it measured."""

    name: str
    command: str
    summary: dict
    epochs: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    config: object = None  # the run's TrainConfig

    @property
    def accuracy(self) -> list[float]:
        return [e["test_accuracy"] for e in self.epochs]


class Runner:
    """Runs job command lines on one private Ray (``local=False``) or in-process.

    Args:
        cluster: the cluster options every run gets (e.g. ["--clients", "2", "--shards", "1"]).
        local: run with the local reference trainer instead (cluster options dropped).
        out_dir: where the runs' directories go.
    """

    def __init__(self, cluster: list[str], *, local: bool, out_dir: Path) -> None:
        self.cluster, self.local, self.out_dir = list(cluster), local, Path(out_dir)
        self.ray_seconds = 0.0
        if not local:
            import _common as C

            self.ray_seconds = C.ray_init_quiet()

    def close(self) -> None:
        if not self.local:
            import ray

            ray.shutdown()

    def run(self, name: str, args: list[str], job: str = "deprune") -> Run:
        """Run ``args`` as ``jobs/<job>.py`` would (or locally); its directory is out_dir/name."""
        from raysplit.records.rows import EpochRow
        from raysplit.observability.callbacks import StepCollector

        argv = [*args, "--out", str(self.out_dir / name), "--no-progress"]
        col = StepCollector()
        t0 = time.perf_counter()
        if self.local:
            from raysplit import local

            argv = _drop_cluster_options(argv)
            command = "python -m raysplit.local " + shlex.join(argv)
            print(f"[{name}] {command}", flush=True)
            cfg = local.config_from_argv(local.parser(), argv)
            s = local.run(cfg, callbacks=[col])
        else:
            import importlib

            from raysplit.runtime.driver import run_cluster

            argv = [*argv, *self.cluster]
            mod = importlib.import_module(job)
            command = f"python jobs/{job}.py " + shlex.join(argv)
            print(f"[{name}] {command}", flush=True)
            cc = mod.config_from_argv(mod.parser(), argv)
            s, _ = run_cluster(cc, callbacks=[col])
            cfg = cc.train
        epochs = [{k: getattr(e, k) for k in EpochRow.__dataclass_fields__} for e in sorted(col.epochs,
                                                                                         key=lambda e: e.epoch)]
        r = Run(name, command, s.to_dict(), epochs, time.perf_counter() - t0, cfg)
        print(f"[{name}] accuracy per epoch {[round(100 * a, 1) for a in r.accuracy]} ({r.seconds:.0f} s)", flush=True)
        return r


def _drop_cluster_options(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in CLUSTER_FLAGS:
            skip = True
        elif not a.split("=")[0] in CLUSTER_FLAGS:
            out.append(a)
    return out


def epochs_to_reach(accuracy: list[float], threshold: float) -> int | None:
    """1-based count of epochs until the test accuracy first reaches ``threshold`` (None: never)."""
    return next((i + 1 for i, a in enumerate(accuracy) if a >= threshold), None)
