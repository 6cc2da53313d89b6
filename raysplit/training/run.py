"""Pieces of a training run shared by the local trainer and the cluster job."""

from __future__ import annotations

import numpy as np

from raysplit.config import SplitConfig, TrainConfig
from raysplit.data import ArrayDataset, batches, load_dataset
from raysplit.budget.schedule import check_method_budgets
from raysplit.training.client import SplitClient
from raysplit.training.network import build_network
from raysplit.training.server import SplitServer


def load_data(cfg: TrainConfig) -> tuple[ArrayDataset, ArrayDataset]:
    kw = {"seed": cfg.split.seed, "image_size": cfg.image_size}
    train = load_dataset(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_subset, **kw)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir, limit=cfg.test_subset, **kw)
    return train, test


def resolve(cfg: TrainConfig, train: ArrayDataset) -> TrainConfig:
    """Fill the network's input shape and classes from the data; check the budgets
    against the channels at the split (method "none" sends them all)."""
    split = cfg.split.replace(input_shape=train.input_shape, num_classes=train.num_classes)
    channels = build_network(split).channels
    cfg = cfg.replace(split=split)
    if cfg.method == "none":
        cfg = cfg.replace(budgets=(channels,))
    check_method_budgets(cfg.method, cfg.budgets, channels)
    return cfg


def run_identity(cfg: TrainConfig) -> dict:
    """The summary.json keys that say what was run (shared by local and cluster runs)."""
    return {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "model": cfg.split.model,
        "split_layer": cfg.split.split_layer,
        "budgets": list(cfg.budgets),
        "epochs_per_budget": list(cfg.epochs_per_budget),
        "codec": cfg.split.codec,
    }


def reset_kind(method: str) -> str:
    """resetPrune when budgets go down, resetdePrune when they go up."""
    return "prune" if method == "prune" else "deprune"


def evaluate(
    client: SplitClient, predict, test: ArrayDataset, batch_size: int
) -> tuple[int, int, int]:
    """Split inference over the test set. ``predict`` maps a list of activation messages
    to a list of predictions (a local server's ``predict`` or a remote shard's).
    Returns (correct, total, bytes sent up)."""
    correct = total = nbytes = 0
    for x, y in batches(test, batch_size, shuffle=False, seed=0):
        buf = client.predict_message(x)
        nbytes += len(buf)
        (pred,) = predict([buf])
        correct += int((pred == y).sum())
        total += len(y)
    return correct, total, nbytes


def partition_order(idx: np.ndarray) -> np.ndarray:
    """Clients keep their partition in data-set order, so one client over all data sees
    exactly the batches the local trainer sees."""
    return np.sort(idx)


__all__ = [
    "SplitClient", "SplitServer", "evaluate", "load_data", "partition_order", "reset_kind", "resolve", "run_identity",
]
