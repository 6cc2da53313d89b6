"""What a split network is trained to minimise, as small objects named in a registry.

Two kinds, because the loss of a split step is computed in two places:

* a **task loss** runs on the server, on the tail's logits and the labels that travelled
  with the activation; it returns one loss per sample, so a shard that merged several
  clients' micro-batches can give each client the mean over its own samples;
* a **regulariser** runs on the client, on parameters that never leave it (the
  compression module's filter f), and is added to the client's part of the loss.

totalLoss = Loss + ε·pruneLoss (Prune-Deprune eq. 2) is the pair ("cross_entropy",
"prune"): the sum is the paper's, and f never has to travel. Distillation losses
(BottleFit) and NAIR's weighted loss plug in as further entries of these registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from raysplit.compression.losses import prune_loss
from raysplit.compression.module import Compressor


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (reduction happens per client on the server)."""
    return F.cross_entropy(logits, labels, reduction="none")


#: Server-side per-sample losses: name -> (logits, labels) -> (N,) tensor.
TASK_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": cross_entropy,
}


class Regularizer(Protocol):
    """A client-side term: ``weighted(compressor, budget)`` is added to the loss before
    backward; ``name`` keys its unweighted value in the step record."""

    name: str

    def __call__(self, compressor: Compressor | None, budget: int) -> tuple[torch.Tensor, float]:
        """(weighted term to backpropagate, unweighted value to record)."""
        ...


@dataclass(frozen=True)
class PruneRegularizer:
    """ε·pruneLoss(f, B), pruneLoss = exp(δ(Σf − B)) + λ·exp(−δ(Σf − B)) (eq. 1)."""

    delta: float
    lam: float
    epsilon: float
    name: str = "prune"

    def __call__(self, compressor: Compressor | None, budget: int) -> tuple[torch.Tensor, float]:
        if compressor is None:
            raise ValueError("the 'prune' regulariser needs the compression module (method 'none' has none)")
        pl = prune_loss(compressor.filter(), budget, self.delta, self.lam)
        return self.epsilon * pl, float(pl.detach())


def make_regularizer(name: str, *, delta: float, lam: float, epsilon: float) -> Regularizer:
    """The regulariser called ``name``, built from the split network's loss constants."""
    if name == "prune":
        return PruneRegularizer(delta, lam, epsilon)
    raise ValueError(f"unknown regularizer {name!r}; allowed: {', '.join(REGULARIZERS)}")


REGULARIZERS = ("prune",)


def task_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in TASK_LOSSES:
        raise ValueError(f"unknown task loss {name!r}; allowed: {', '.join(TASK_LOSSES)}")
    return TASK_LOSSES[name]
