"""pruneLoss (eq. 1) and totalLoss (eq. 2) of Prune-Deprune."""

from __future__ import annotations

import torch


def prune_loss(f: torch.Tensor, budget: float, delta: float = 0.1, lam: float = 1.0) -> torch.Tensor:
    """exp(δ(Σf − B)) + λ·exp(−δ(Σf − B)).

    A two-sided barrier: the first term punishes keeping more than B channels "on", the
    second (weighted by λ, 0 ≤ λ ≤ 1) keeps the filter from over-correcting below B.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    gap = f.sum() - budget
    return torch.exp(delta * gap) + lam * torch.exp(-delta * gap)


def total_loss(task_loss: torch.Tensor, p_loss: torch.Tensor, epsilon: float = 1000.0) -> torch.Tensor:
    """Loss + ε·pruneLoss."""
    return task_loss + epsilon * p_loss
