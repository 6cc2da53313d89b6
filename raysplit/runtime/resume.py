"""``--resume RUN_DIR``: continue a run that was stopped (killed, or its machine lost) from
its last checkpoint.

What a resumed run does:

1. **Configuration**: read from ``RUN_DIR/config.json`` (the resolved configuration the
   run wrote first), so the resumed run is the same run: same seed, data, schedule, run
   id. Options given with ``--resume`` must match it, except the ones that only say how
   it runs (:data:`RUNTIME_ONLY`); a difference is an error naming the option.
2. **State**: the latest ``checkpoints/epoch_<e>/state.pt`` (``--checkpoint-every``): every
   shard's tail, momentum and step log, every client's recovery state, the scheduler's
   policy position. Each client then rebuilds itself from its state and the steps its
   shard logged after it (``runtime/recovery.py``); with the async policy that is what
   makes the checkpoint a consistent cut.
3. **Records**: the Parquet tables keep every row up to the checkpoint's cut (per client:
   the last step the saved shards had applied; evaluations of the epochs its policy
   position had completed) and lose the rows after it, which are redone; the run writer
   re-reads the kept rows, so epoch rows and totals continue without gaps or repeats.
   Models and checkpoints already written stay. Times continue from the last kept row.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from raysplit.records.rows import EvalRow, StepRow

#: Options a resumed run may set differently: they say how it runs, not what it computes.
RUNTIME_ONLY = frozenset({
    "resume", "progress", "failure_policy", "max_failures", "client_cpu", "cap_mechanism", "clients_per_actor",
    "malloc", "openmp_spin", "shard_device", "shard_threads", "shard_cpus", "tenant_key_file", "out",
})

_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint folder of a run directory."""
    root = Path(run_dir) / "checkpoints"
    found = sorted(
        (int(m[1]), p) for p in (root.iterdir() if root.is_dir() else []) if (m := _EPOCH_DIR.match(p.name))
        and (p / "state.pt").is_file()
    )
    if not found:
        raise FileNotFoundError(f"--resume {run_dir}: no checkpoint in {root} (the run needs --checkpoint-every k, "
                                f"and must have finished at least k epochs)")
    return found[-1][1]


def from_dict(cls, data: dict):
    """A config dataclass (nested ones too) from its ``to_dict()``; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    extra = sorted(set(data) - names)
    if extra:
        raise ValueError(f"config.json has options this raysplit does not know: {', '.join(extra)}")
    kw = {}
    for name, value in data.items():
        kw[name] = _value(hints[name], value)
    return cls(**kw)


def _value(tp, value):
    """A field's value from JSON: nested configs (also in tuples, e.g. --devices' classes)."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return tuple(_value(args[0], v) for v in value)
    return value


def load_run_config(run_dir: str | Path, cls=None):
    """The config a run directory was written with: a ClusterConfig (a cluster run) or a
    TrainConfig (the local trainer's); ``cls`` says which is wanted."""
    from raysplit.config import ClusterConfig, TrainConfig

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no config.json there; is it a raysplit run directory?")
    data = json.loads(path.read_text())
    found = ClusterConfig if "train" in data else TrainConfig
    cls = cls or ClusterConfig
    if found is not cls:
        other = "jobs/deprune.py" if found is ClusterConfig else "python -m raysplit.local"
        raise ValueError(f"--resume {run_dir}: that run was made by {other}; resume it with {other} --resume")
    return from_dict(cls, data)


def flat(cfg) -> dict[str, object]:
    """{field: value} over a config and the configs nested in it."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flat(v))
        else:
            out[f.name] = v
    return out


def check_given(saved, given: dict[str, object]) -> None:
    """Options given with --resume must equal the run's (except RUNTIME_ONLY)."""
    have = flat(saved)
    bad = [f"{k} ({v!r}; the run has {have[k]!r})" for k, v in sorted(given.items())
           if k in have and k not in RUNTIME_ONLY and _norm(v) != _norm(have[k])]
    if bad:
        raise ValueError("--resume continues the run as it was configured; these options differ: " + ", ".join(bad)
                         + f". Allowed to change: {', '.join(sorted(RUNTIME_ONLY - {'resume', 'out'}))}")


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def resumed_config(run_dir: str | Path, given: dict[str, object], cls=None):
    """The configuration to continue ``run_dir`` with: the saved one, with the
    runtime-only options given now; its ``out`` is ``run_dir``."""
    from raysplit.config import TrainConfig

    saved = load_run_config(run_dir, cls)
    check_given(saved, given)
    now = {k: v for k, v in given.items() if k in RUNTIME_ONLY and k not in ("resume", "out")}
    train = saved if isinstance(saved, TrainConfig) else saved.train
    train = train.replace(**{k: v for k, v in now.items() if hasattr(train, k)}, out=str(run_dir),
                          resume=str(run_dir))
    if isinstance(saved, TrainConfig):
        return train
    return saved.replace(train=train, **{k: v for k, v in now.items() if hasattr(saved, k) and not hasattr(train, k)})


# -- the records' cut ---------------------------------------------------------------------
@dataclass(frozen=True)
class Cut:
    """Where a checkpoint stands in the records.

    Args:
        epoch: the checkpoint's epoch.
        last_step: client -> the last step the checkpoint holds (its step rows up to it stay).
        epochs_done: client -> epochs it had completed (its evaluations before stay).
    """

    epoch: int
    last_step: dict[int, int]
    epochs_done: dict[int, int]


def checkpoint_cut(ck: dict, epochs_done: dict[int, int]) -> Cut:
    """The cut of a loaded checkpoint; ``epochs_done`` from its policy state."""
    last = {int(c): int(s["client"]["step"]) for c, s in ck["clients"].items()}
    per = {int(c): int(s["client"].get("seqs_per_step", 1)) for c, s in ck["clients"].items()}
    for shard in ck["shards"]:
        for c, seq in shard.get("log", {}).get("last", {}).items():  # message numbers -> complete steps
            last[int(c)] = max(last.get(int(c), 0), int(seq) // per.get(int(c), 1))
    return Cut(int(ck["epoch"]), last, {int(c): int(e) for c, e in epochs_done.items()})


def kept_records(run_dir: str | Path, cut: Cut) -> tuple[list, float]:
    """The step and evaluation rows up to ``cut``, in the order they were recorded, and
    the latest ``time`` among them (a resumed run's clock continues from it)."""
    run_dir = Path(run_dir)
    rows: list = []
    for name, cls, keep in (
        ("steps.parquet", StepRow, lambda r: r["step"] <= cut.last_step.get(r["client"], 0)),
        ("evals.parquet", EvalRow, lambda r: r["epoch"] < cut.epochs_done.get(r["client"], 0)),
    ):
        path = run_dir / name
        if not path.is_dir() or not any(path.glob("part-*.parquet")):
            continue
        table = pq.read_table(path).to_pylist()
        fields = [f.name for f in dataclasses.fields(cls)]
        rows += [cls(**{k: r[k] for k in fields if k in r}) for r in table if keep(r)]  # new columns: defaults
    rows.sort(key=lambda r: (r.time, 0 if isinstance(r, StepRow) else 1))
    return rows, max((r.time for r in rows), default=0.0)


def saved_files(run_dir: str | Path, sub: str, pattern: str) -> list[str]:
    """Relative paths of the models or checkpoints a run had written, oldest first."""
    root = Path(run_dir) / sub
    files = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return [str(p.relative_to(run_dir)) for p in files]


# -- the driver's side ------------------------------------------------------------------
@dataclass(frozen=True)
class Resumed:
    """What a resumed cluster run starts from.

    Args:
        source: the checkpoint folder (relative to the run directory).
        checkpoint: its loaded state.
        rows: the step and evaluation rows kept.
    """

    source: str
    checkpoint: dict
    rows: list


def prepare(cluster) -> Resumed:
    """Before the actors start: the latest checkpoint and the rows up to its cut; the
    run's clock is set to continue from the last kept row."""
    import time

    from raysplit.budget.policies import make_policy
    from raysplit.runtime.checkpoint import load_checkpoint

    cc, cfg = cluster.cc, cluster.cfg
    path = latest_checkpoint(cfg.out)
    ck = load_checkpoint(path)
    policy = make_policy(cc.policy, cluster.plan, cluster.steps_per_epoch, segment_steps=cc.sync_every,
                         aggregate=cc.mode == "splitfed")
    policy.load_state_dict(ck["scheduler"]["policy"])
    done = policy.progress()
    gone = {int(c) for c in ck["scheduler"].get("failed", {})}
    cut = checkpoint_cut(ck, {**done, **{c: 10**9 for c in gone}})
    cut = dataclasses.replace(cut, last_step={**cut.last_step, **{c: 2**62 for c in gone}})
    rows, last_time = kept_records(cfg.out, cut)
    cluster.t0 = time.time() - last_time
    print(f"[raysplit] resuming {cfg.out} from {path.name}: {sum(isinstance(r, StepRow) for r in rows)} step "
          f"records kept", flush=True)
    return Resumed(str(path.relative_to(cfg.out)), ck, rows)


def restore(cluster, r: Resumed) -> None:
    """After the actors are ready: load the shards' and the scheduler's states, mark the
    clients that had failed, and hand the kept rows to the writer."""
    import ray

    from raysplit.runtime.placement import shard_of

    ck, n = r.checkpoint, len(cluster.shards)
    loads = []
    for k, shard in enumerate(cluster.shards):
        state = dict(ck["shards"][k])
        state["recovery"] = {c: s for c, s in ck["clients"].items() if shard_of(int(c), n) == k}
        loads.append(shard.load_state_dict.remote(state))
    loads.append(cluster.scheduler.load_state_dict.remote(ck["scheduler"]))
    ray.get(loads)
    for c, err in ck["scheduler"].get("failed", {}).items():
        cluster.failed[int(c)] = err
        cluster.writer.client_failed(int(c), err)
    cluster.writer.put(r.rows)
    cluster.writer.flush()


def given_options(parser, argv) -> dict[str, object]:
    """{field: value} of the options given on the command line or in --config (what a
    ``--resume`` run must not change), from a parsed ``ConfigParser``."""
    ns = vars(parser.parser.parse_args(argv))
    in_file = parser._read_config(ns["config"]) if ns.get("config") else {}
    return {opt.name: parser.values[opt.cls][opt.name] for flag, opt in parser.options.items()
            if opt.dest in ns or flag in in_file}
