"""Model compression by L1 sparsification and threshold pruning (Krouka et al., §III-A).

Problem (9) (loss + an ℓ0 count of the parameters) is NP-hard, so the paper solves its
convex relaxation (10) and then prunes:

    min_θ  μ·loss(θ) + (1 - μ)·Σ_l ‖θ_l‖₁          (eq. 10; the paper: μ = 0.9999)
    θ ← θ · [|θ| >= threshold]                      (pruning by a predefined threshold)

θ_l is every weight *and bias* of layer l (the paper's Γ counts both). The compression
ratio is C_r = (non-zero parameters of the original model) / (non-zero parameters of the
compressed one).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def l1_norm(module: nn.Module) -> torch.Tensor:
    """Σ_l ‖θ_l‖₁ over every parameter of ``module``."""
    return sum(p.abs().sum() for p in module.parameters())


def sparsified_loss(task_loss: torch.Tensor, module: nn.Module, mu: float) -> torch.Tensor:
    """μ·loss + (1 - μ)·Σ‖θ_l‖₁ (eq. 10); μ = 1 is the plain loss (the original model)."""
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    if mu == 1.0:
        return task_loss
    return mu * task_loss + (1.0 - mu) * l1_norm(module)


def prune(state: dict[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    """A copy of ``state`` with every parameter entry of magnitude below ``threshold`` set to 0."""
    if not threshold >= 0:
        raise ValueError(f"pruning threshold must be >= 0, got {threshold}")
    return {k: np.where(np.abs(v) < threshold, np.zeros((), v.dtype), v) for k, v in state.items()}


def nonzero(state: dict[str, np.ndarray]) -> int:
    return int(sum(np.count_nonzero(v) for v in state.values()))


def compression_ratio(original: dict[str, np.ndarray], compressed: dict[str, np.ndarray]) -> float:
    """C_r: non-zero parameters of the original model over those of the compressed one."""
    kept = nonzero(compressed)
    return float("inf") if kept == 0 else nonzero(original) / kept
