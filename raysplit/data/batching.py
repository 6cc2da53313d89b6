"""Deterministic batch iteration over an :class:`~raysplit.data.arrays.ArrayDataset`: the
shuffle order depends only on ``(seed, epoch)``, so reruns see the same batches.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .arrays import ArrayDataset
from .checks import check_int

__all__ = ["batches", "num_batches"]


def num_batches(
    n: int | ArrayDataset, batch_size: int, *, drop_last: bool = False, max_batches: int | None = None
) -> int:
    """How many batches :func:`batches` yields for ``n`` samples (or a data set)."""
    n = len(n) if isinstance(n, ArrayDataset) else check_int(n, "n")
    batch_size = check_int(batch_size, "batch_size", 1)
    count = n // batch_size if drop_last else -(-n // batch_size)
    if max_batches is not None:
        count = min(count, check_int(max_batches, "max_batches"))
    return count


def batches(
    ds: ArrayDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    drop_last: bool = False,
    max_batches: int | None = None,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate ``(x, y)`` batches: C-contiguous float32 ``x`` and int64 ``y``.

    With ``shuffle`` the order is a permutation drawn from ``SeedSequence([seed, epoch])``,
    so it depends only on ``(seed, epoch)``; without it batches are consecutive slices
    (views into ``ds``: do not write to them). The last short batch is dropped with
    ``drop_last``; at most ``max_batches`` batches are yielded. ``start`` skips the
    first batches of that order without building them (a segment of an epoch resumes
    where the previous one stopped). Arguments are checked when called, not at the
    first ``next()``.
    """
    if not isinstance(ds, ArrayDataset):
        raise TypeError(f"batches: ds must be an ArrayDataset, got {type(ds).__name__}")
    count = num_batches(len(ds), batch_size, drop_last=drop_last, max_batches=max_batches)
    seed = check_int(seed, "seed")
    epoch = check_int(epoch, "epoch")
    start = check_int(start, "start")
    order = None
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(len(ds))
    return _iter_batches(ds, int(batch_size), start, count, order)


def _iter_batches(
    ds: ArrayDataset, batch_size: int, start: int, count: int, order: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The generator behind :func:`batches` (split out so that its checks run eagerly)."""
    n = len(ds)
    for b in range(start, count):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        if order is None:
            yield ds.x[lo:hi], ds.y[lo:hi]
        else:
            idx = order[lo:hi]
            yield ds.x[idx], ds.y[idx]
