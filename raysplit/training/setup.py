"""Everything a run decides before it trains: the data, the resolved configuration, the plan.

Shared by the local trainer and the cluster driver, so both resolve a configuration the
same way: the image size (the data set's, raised to the smallest the model accepts), the
network's input shape and classes from the data, the channels at the split, the plan,
and the run's identity.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from raysplit.config.train import TrainConfig
from raysplit.data import ArrayDataset, get_dataset, load_dataset
from raysplit.identity import Identity, new_run_id
from raysplit.models.registry import get_model
from raysplit.training.methods import Plan, make_plan
from raysplit.training.network import build_network


@dataclass(frozen=True)
class Prepared:
    """A run ready to train.

    Args:
        cfg: the configuration with everything filled in (image size, input shape,
            classes, run id).
        plan: what it trains, phase by phase.
        train, test: the data.
        identity: run id and tenant.
    """

    cfg: TrainConfig
    plan: Plan
    train: ArrayDataset
    test: ArrayDataset
    identity: Identity


def image_size(cfg: TrainConfig) -> int:
    """The image side the run uses: the one asked for, else the data set's default raised
    to the smallest the model accepts. A size asked for that the model cannot take is an
    error naming the size that works."""
    spec, model = get_dataset(cfg.dataset), get_model(cfg.split.model)
    need = model.min_input_size
    if cfg.image_size is not None:
        if cfg.image_size < need:
            raise ValueError(
                f"image_size {cfg.image_size} is too small for {model.name}: it needs at least {need} px "
                f"(--image-size {need} or more)"
            )
        return cfg.image_size
    size = spec.image_size(None)
    if size < need:
        print(f"[raysplit] {cfg.dataset} images are {size} px, too small for {model.name}; using {need} px "
              f"(set --image-size to choose)", file=sys.stderr, flush=True)
        size = need
    return size


def prepare(cfg: TrainConfig) -> Prepared:
    """Load the data and resolve the configuration into a plan."""
    size = image_size(cfg)
    kw = {"seed": cfg.split.seed, "image_size": size}
    train = load_dataset(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_subset, **kw)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir, limit=cfg.test_subset, **kw)
    split = cfg.split.replace(input_shape=train.input_shape, num_classes=train.num_classes)
    channels = build_network(split).channels
    plan = make_plan(cfg.method, cfg.budgets, cfg.epochs_per_budget, lr=cfg.lr, gamma=cfg.gamma, lk=cfg.lk,
                     reset_filter=cfg.reset_filter, channels=channels, save_last=cfg.save_model)
    cfg = cfg.replace(split=split, image_size=size, run_id=cfg.run_id or new_run_id(cfg.method))
    return Prepared(cfg, plan, train, test, Identity(cfg.run_id, cfg.tenant))


def test_share(n: int, clients: int, client: int, evaluate: str) -> np.ndarray:
    """Indices of the test samples ``client`` scores: all of them ("full"), or its
    contiguous share ("share": the shares of all clients cover the set once)."""
    if evaluate == "full":
        return np.arange(n)
    return np.array_split(np.arange(n), clients)[client]
