"""Averaging model states (FedAvg / SplitFed), as pure numpy."""

from __future__ import annotations

import numpy as np


def weighted_average(states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """Sample-weighted average of states. Integer buffers (BatchNorm's
    num_batches_tracked) take the maximum instead of a mean."""
    if not states:
        raise ValueError("no states to average")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    w = w / w.sum()
    keys = states[0].keys()
    for s in states[1:]:
        if s.keys() != keys:
            raise ValueError("states have different keys")
    out = {}
    for k in keys:
        arrs = [s[k] for s in states]
        if np.issubdtype(arrs[0].dtype, np.integer):
            out[k] = np.max(np.stack(arrs), axis=0)
        else:
            out[k] = np.tensordot(w, np.stack([a.astype(np.float64) for a in arrs]), axes=1).astype(arrs[0].dtype)
    return out
