"""Model state as numpy arrays (what crosses Ray fast and what averaging works on), a
private random-number stream per half of the network, and the reader of saved state files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_state(module: nn.Module, state: dict[str, np.ndarray]) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"state does not fit the module: missing {missing[:5]}, unexpected {extra[:5]}")
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)).to(own[k].dtype) for k, v in state.items()})


def read_state_file(path: Path, fmt: str, version: int, what: str) -> dict:
    """A dict saved by ``torch.save`` with ``{"format": fmt, "version": version, ...}``,
    loaded with ``weights_only=True``; anything else is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path} is not a raysplit {what}")
    if data["version"] != version:
        raise ValueError(f"{path}: {what} version {data['version']}; this raysplit reads version {version}")
    return data


def as_tensors(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy -> tensors, so a file can be read with ``torch.load(weights_only=True)``.
    Arrays from Ray's object store are read-only views: those are copied."""
    return {k: torch.from_numpy(np.array(v, copy=not v.flags.writeable, order="C")) for k, v in state.items()}


def as_arrays(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def uses_randomness(module: nn.Module) -> bool:
    """Whether a forward pass in train mode draws random numbers (dropout)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def tensor_bytes(tree: Any) -> int:
    """Bytes of every torch tensor in ``tree`` (dicts, lists, tuples): what a point of it weighs."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


class PrivateRng:
    """The random stream of one half of the network, kept apart from the process's.

    Clients that share an actor process share torch's global generator, so dropout in one
    would shift another's draws, and a saved state would not say which draws come next.
    With ``enabled`` (the half has dropout), ``with rng:`` swaps this stream in around a
    step; without, it costs nothing.
    """

    def __init__(self, seed: int, enabled: bool) -> None:
        self.enabled = enabled
        self.state = torch.Generator().manual_seed(seed).get_state() if enabled else None
        self._saved: torch.Tensor | None = None

    def __enter__(self) -> None:
        if self.enabled:
            self._saved = torch.get_rng_state()
            torch.set_rng_state(self.state)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.state = torch.get_rng_state()
            torch.set_rng_state(self._saved)

    def state_dict(self) -> torch.Tensor | None:
        return None if self.state is None else self.state.clone()

    def load_state_dict(self, state: torch.Tensor | None) -> None:
        if self.enabled and state is not None:
            self.state = state.clone()
