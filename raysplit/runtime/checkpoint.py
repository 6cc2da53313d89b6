"""Checkpoints: every client's, shard's and the scheduler's full state after an epoch.

``checkpoints/epoch_<e>/state.pt`` holds::

    {"format": "raysplit-checkpoint", "version": 1, "epoch": e,
     "clients": {client: ClientLoop.state_dict()},   # modules, momentum, budget, step, RNG, data position
     "shards": [SplitServer.state_dict(), ...],       # modules, momentum, steps, RNG
     "scheduler": Coordinator.state_dict()}           # policy position, sequence numbers, live clients

A plain ``torch.save`` of tensors and built-in types (``torch.load(weights_only=True)``
reads it), written to a temporary folder and renamed, so a checkpoint is there whole or
not at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from raysplit.training.state import read_state_file

FORMAT = "raysplit-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, snapshot) -> Path:
    """Write a ``CheckpointSnapshot`` (``raysplit.records.writer``) to the folder ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"format": FORMAT, "version": VERSION, "epoch": int(snapshot.epoch),
                "clients": {int(c): s for c, s in snapshot.clients.items()},
                "shards": list(snapshot.shards), "scheduler": snapshot.scheduler}, tmp / "state.pt")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The state saved in the checkpoint folder ``path``."""
    return read_state_file(Path(path) / "state.pt", FORMAT, VERSION, "checkpoint")
