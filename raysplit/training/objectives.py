"""What a split network is trained to minimise, as small objects named in a registry.

Two kinds, because the loss of a split step is computed in two places:

* a **task loss** runs on the server, on the tail's logits and the labels that travelled
  with the activation; it returns one loss per sample, so a shard that merged several
  clients' micro-batches can give each client the mean over its own samples;
* a **regulariser** runs on the client, on parameters that never leave it (the
  compression module's filter f), and is added to the client's part of the loss.

totalLoss = Loss + ε·pruneLoss (Prune-Deprune eq. 2) is the pair ("cross_entropy",
"prune"): the sum is the paper's, and f never has to travel. NAIR's weighted loss plugs
in as a further entry of these registries.

A third kind, the **distillation losses** (BottleFit), also runs on the server, but
compares the student with its teacher: the features at the distilled points and the
logits of both (:class:`Outputs`), so they have a registry of their own
(``DISTILL_LOSSES``): GHND (eq. 4) and KD (eq. 6).
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


@dataclass(frozen=True)
class Outputs:
    """What one network computed for a batch, for distillation.

    Args:
        features: (N, ...) tensors at the distilled points, in order: the decoder's output
            (the teacher's: its activation at the split), then each later layer's.
        logits: (N, classes).
    """

    features: tuple[torch.Tensor, ...]
    logits: torch.Tensor


def ghnd(student: Outputs, teacher: Outputs) -> torch.Tensor:
    """Generalized head network distillation (BottleFit eq. 4, λ = 1), per sample:
    Σ_j ||t_j(x) − s_j(x)||² over the distilled points (decoder output, later layers).

    The recipe's torchdistill loss is MSELoss(reduction="sum") per point, summed over the
    batch; here each sample's sum, so a client's loss is the mean over its samples (Adam's
    update does not depend on that constant factor)."""
    if len(student.features) != len(teacher.features):
        raise ValueError(
            f"GHND compares the same points: the student has {len(student.features)}, the teacher "
            f"{len(teacher.features)}"
        )
    total = student.logits.new_zeros(student.logits.shape[0])
    for j, (s, t) in enumerate(zip(student.features, teacher.features)):
        if s.shape != t.shape:
            raise ValueError(f"GHND point {j}: student output {tuple(s.shape)}, teacher output {tuple(t.shape)}")
        total = total + (s - t).square().flatten(1).sum(1)
    return total


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *, alpha: float,
       tau: float) -> torch.Tensor:
    """Knowledge distillation (Hinton et al.; BottleFit eq. 6), per sample:
    α·CE(s, y) + (1 − α)·τ²·KL(p ‖ q), p = softmax(t/τ) the teacher's soft targets,
    q = softmax(s/τ) the student's (torchdistill's KDLoss, batchmean = the mean over samples)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"KD: student logits {tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)}")
    log_q = F.log_softmax(student_logits / tau, dim=1)
    log_p = F.log_softmax(teacher_logits / tau, dim=1)
    soft = (log_p.exp() * (log_p - log_q)).sum(1)
    return alpha * F.cross_entropy(student_logits, labels, reduction="none") + (1 - alpha) * tau**2 * soft


class DistillLoss(Protocol):
    def __call__(self, student: Outputs, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        """(N,) per-sample loss of the student against its teacher."""
        ...


def _ghnd(alpha: float, tau: float) -> DistillLoss:
    return lambda s, t, labels: ghnd(s, t)


def _kd(alpha: float, tau: float) -> DistillLoss:
    return lambda s, t, labels: kd(s.logits, t.logits, labels, alpha=alpha, tau=tau)


#: Server-side distillation losses: name -> (α, τ) -> (student, teacher, labels) -> (N,) tensor.
DISTILL_LOSSES: dict[str, Callable[[float, float], DistillLoss]] = {"ghnd": _ghnd, "kd": _kd}


def distill_loss(name: str, *, alpha: float, tau: float) -> DistillLoss:
    if name not in DISTILL_LOSSES:
        raise ValueError(f"unknown distillation loss {name!r}; allowed: {', '.join(DISTILL_LOSSES)}")
    if not 0 <= alpha <= 1 or not tau > 0:
        raise ValueError(f"KD needs alpha in [0, 1] and tau > 0, got alpha={alpha}, tau={tau}")
    return DISTILL_LOSSES[name](alpha, tau)


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
