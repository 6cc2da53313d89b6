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
        address: the Ray to run on: "local" starts a private one (this shared machine's
            default), "auto" or an address joins a running cluster (e.g. its GPU nodes,
            under ``ray job submit``).
    """

    def __init__(self, cluster: list[str], *, local: bool, out_dir: Path, address: str = "local") -> None:
        self.cluster, self.local, self.out_dir = list(cluster), local, Path(out_dir)
        self.ray_seconds = 0.0
        if not local:
            import _common as C

            self.ray_seconds = C.ray_init_quiet(address=address)

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


def add_run_options(ap, name: str, *, lr: float = 0.01) -> None:
    """The options every training-method benchmark takes (data, batches, cluster, where results go)."""
    import _common as C

    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-subset", default="4096", help="training samples (or 'all')")
    ap.add_argument("--test-subset", default="1000", help="test samples (or 'all')")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", default="", help="more job options for every run, e.g. '--gamma 2 --threads 1'")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--local", action="store_true", help="the local reference trainer instead of the cluster")
    ap.add_argument("--address", default="local", help="the Ray to run on: 'local' (a private one, the default), "
                    "'auto' or HOST:PORT (a running cluster, e.g. with GPU shard nodes)")
    ap.add_argument("--runs-dir", type=Path, default=Path(f"/tmp/raysplit-bench/{name}"), help="the runs' directories")
    ap.add_argument("--out-dir", type=Path, default=C.RESULTS, help="folder for the results (.json, .md)")
    ap.add_argument("--quick", action="store_true", help="smoke run: digits, tiny sizes (unless given)")


def parse(ap, argv: list[str] | None, quick: dict, preset: dict | None = None, use_preset: str = ""):
    """Parse; --quick (and the flag ``use_preset``, e.g. full_scale) switch defaults, options given still win."""
    a = ap.parse_args(argv)
    defaults = {**(preset if preset and getattr(a, use_preset, False) else {}), **(quick if a.quick else {})}
    if defaults:
        ap.set_defaults(**defaults)
        a = ap.parse_args(argv)
    return a


def job_args(a) -> list[str]:
    """The job options of ``add_run_options`` every run gets."""
    return ["--dataset", a.dataset, "--model", a.model, "--train-subset", str(a.train_subset), "--test-subset",
            str(a.test_subset), "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--seed", str(a.seed),
            *(["--data-dir", a.data_dir] if a.data_dir else []), *shlex.split(a.extra)]


def where(a) -> str:
    return "local trainer" if a.local else f"{a.clients} clients, {a.shards} shard(s)"


def command(script: str, argv: list[str] | None) -> str:
    return f"python benchmarks/{script}.py " + shlex.join(argv if argv is not None else sys.argv[1:])


def header(script: str, command: str, a) -> dict:
    """The fields every run-based benchmark's JSON starts with: what, when, how to re-run it,
    on which machine, and every option (paths as text)."""
    import _common as C

    return {"benchmark": script, "date": C.now_iso(), "command": command, "machine": C.machine_info(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
