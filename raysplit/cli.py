"""Command-line options shared by ``python -m raysplit.local`` and ``jobs/deprune.py``.

Options may also come from a YAML file (``--config run.yaml``, keys are the long option
names with dashes or underscores); the command line wins over the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raysplit.codec import CodecConfig
from raysplit.config import SplitConfig, TrainConfig
from raysplit.data import DATASETS
from raysplit.models import MODELS
from raysplit.budget.schedule import METHODS


def int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 4,128") from None
    if not vals:
        raise argparse.ArgumentTypeError("empty list")
    return vals


def codec_spec(text: str) -> str:
    try:
        CodecConfig.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_train_args(p: argparse.ArgumentParser, *, default_out: str) -> None:
    p.add_argument("--config", type=Path, help="YAML file with option defaults (command line wins)")
    p.add_argument("--method", choices=METHODS, default="deprune", help="none | fixed | deprune | prune")
    p.add_argument("--dataset", choices=DATASETS, default="fashion-mnist")
    p.add_argument("--data-dir", default=None, help="data set folder (else $RAYSPLIT_DATA, else the default path)")
    p.add_argument("--image-size", type=int, default=None, help="resize/pad images to this size (px)")
    p.add_argument("--model", choices=MODELS, default="vgg_small")
    p.add_argument("--split-layer", type=int, default=None, help="cut after this many layers (default: model's)")
    p.add_argument("--budgets", type=int_list, default=(4, 128), help="channels sent per phase, e.g. 4,128")
    p.add_argument("--epochs-per-budget", type=int_list, default=(2, 1), help="epochs per phase, e.g. 15,3 or 2")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--gamma", type=float, default=1.0, help="selectLr factor after a transition (1 = off)")
    p.add_argument("--lk", type=int, default=1, help="epochs of boosted lr after a transition")
    p.add_argument("--no-reset-filter", action="store_true", help="keep f at transitions (no resetPrune/dePrune)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--codec", type=codec_spec, default="float32", help="float32|float16|int8 [+lz4|+zstd[:level]]")
    p.add_argument("--resolution", type=int, default=1, help="resolution compression factor r")
    p.add_argument("--mask", choices=("sigmoid2", "sigmoid"), default="sigmoid2")
    p.add_argument("--epsilon", type=float, default=1000.0, help="ε, weight of pruneLoss")
    p.add_argument("--delta", type=float, default=0.1, help="δ of pruneLoss")
    p.add_argument("--lam", type=float, default=1.0, help="λ of pruneLoss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None, help="use this many training samples")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on this many test samples")
    p.add_argument("--max-batches", type=int, default=None, help="cap steps per epoch (per client)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    p.add_argument("--out", default=default_out, help="run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_with_config(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; a --config YAML supplies defaults that explicit options override."""
    pre, _ = p.parse_known_args(argv)
    if pre.config is not None:
        import yaml

        if not pre.config.exists():
            p.error(f"--config {pre.config}: no such file")
        data = yaml.safe_load(pre.config.read_text()) or {}
        if not isinstance(data, dict):
            p.error(f"--config {pre.config}: expected a mapping of option: value")
        known = {a.dest for a in p._actions}
        defaults = {}
        for k, v in data.items():
            dest = str(k).replace("-", "_")
            if dest not in known:
                p.error(f"--config {pre.config}: unknown option {k!r}")
            if dest in ("budgets", "epochs_per_budget") and not isinstance(v, (list, tuple)):
                v = int_list(str(v))
            elif isinstance(v, list):
                v = tuple(v)
            defaults[dest] = v
        p.set_defaults(**defaults)
    return p.parse_args(argv)


def train_config_from_args(a: argparse.Namespace) -> TrainConfig:
    split = SplitConfig(
        model=a.model,
        split_layer=a.split_layer,
        use_module=a.method != "none",
        resolution=a.resolution,
        mask=a.mask,
        delta=a.delta,
        epsilon=a.epsilon,
        lam=a.lam,
        codec=a.codec,
        seed=a.seed,
        torch_threads=a.threads,
    )
    budgets = tuple(a.budgets)
    if a.method == "none":
        budgets = (budgets[-1],)  # replaced by the channel count at run time
    return TrainConfig(
        method=a.method,
        split=split,
        dataset=a.dataset,
        data_dir=a.data_dir,
        image_size=a.image_size,
        budgets=budgets,
        epochs_per_budget=tuple(a.epochs_per_budget) if a.method != "none" else (sum(a.epochs_per_budget),),
        lr=a.lr,
        gamma=a.gamma,
        lk=a.lk,
        reset_filter=not a.no_reset_filter,
        batch_size=a.batch_size,
        train_subset=a.train_subset,
        test_subset=a.test_subset,
        max_batches=a.max_batches,
        out=a.out,
    )
