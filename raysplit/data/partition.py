"""Split sample indices among clients (pure numpy, deterministic for a seed).

* ``iid``: a seeded random permutation cut into ``n_clients`` nearly equal parts
  (sizes differ by at most one).
* ``dirichlet``: the classic label-skew partition (Hsu et al. 2019; the NIID-Bench /
  FedML code): for every class, shuffle its samples, draw client proportions
  ``p ~ Dirichlet(alpha * 1)``, zero the share of clients that already hold
  ``>= n / n_clients`` samples (the usual balancing step) and cut the class at the
  cumulative proportions. The whole draw is repeated until every client holds at least
  ``min_size`` samples (at most ``max_tries`` draws, then a ``ValueError``). Small
  ``alpha`` gives few classes per client; large ``alpha`` approaches iid.

Every function returns a list of ``n_clients`` sorted int64 index arrays that are
disjoint and together cover ``range(n_samples)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PARTITION_SCHEMES", "partition", "partition_iid", "partition_dirichlet"]

PARTITION_SCHEMES = ("iid", "dirichlet")


def _int_arg(value, what: str, minimum: int, maximum: int | None = None) -> int:
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if ok:
        value = int(value)
        ok = value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{what} must be an integer {bound}, got {value!r}")
    return value


def _check_clients(n_clients, n_samples: int) -> int:
    if n_samples < 1:
        raise ValueError(f"cannot partition {n_samples} samples: need at least one")
    return _int_arg(n_clients, f"n_clients (n_samples={n_samples})", 1, n_samples)


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        a = float("nan")
    if isinstance(alpha, bool) or not (math.isfinite(a) and a > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return a


def _check_labels(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def partition_iid(n_samples: int, n_clients: int, seed: int) -> list[np.ndarray]:
    """Random equal split of ``range(n_samples)`` into ``n_clients`` parts."""
    n_samples = _int_arg(n_samples, "n_samples", 1)
    n_clients = _check_clients(n_clients, n_samples)
    seed = _int_arg(seed, "seed", 0)
    perm = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, n_clients)]


def partition_dirichlet(
    labels: np.ndarray,
    n_clients: int,
    alpha: float,
    seed: int,
    *,
    min_size: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: per-class ``Dirichlet(alpha)`` client proportions (see module doc)."""
    labels = _check_labels(labels)
    n = len(labels)
    n_clients = _check_clients(n_clients, n)
    alpha = _check_alpha(alpha)
    seed = _int_arg(seed, "seed", 0)
    min_size = _int_arg(min_size, "min_size", 0)
    max_tries = _int_arg(max_tries, "max_tries", 1)
    if min_size * n_clients > n:
        raise ValueError(
            f"min_size={min_size} for each of n_clients={n_clients} clients needs "
            f"{min_size * n_clients} samples, only {n} available"
        )

    rng = np.random.default_rng(seed)
    _, inverse = np.unique(labels, return_inverse=True)
    by_class = [np.flatnonzero(inverse == k) for k in range(int(inverse.max()) + 1)]
    cap = n / n_clients
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        sizes = np.zeros(n_clients, dtype=np.int64)
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(n_clients, alpha)) * (sizes < cap)
            total = p.sum()
            if not (np.isfinite(total) and total > 0):  # every eligible share underflowed to 0
                p = (sizes < cap).astype(np.float64)
                if p.sum() == 0:
                    p = np.ones(n_clients)
                total = p.sum()
            cuts = (np.cumsum(p / total) * len(idx)).astype(np.int64)[:-1]
            for j, chunk in enumerate(np.split(idx, cuts)):
                parts[j].append(chunk)
                sizes[j] += len(chunk)
        if sizes.min() >= min_size:
            return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    raise ValueError(
        f"partition_dirichlet: no draw in {max_tries} tries gave every one of the "
        f"{n_clients} clients at least min_size={min_size} samples with alpha={alpha} "
        f"({n} samples, {len(by_class)} classes); use a larger alpha, fewer clients or a "
        "smaller min_size"
    )


def partition(
    labels: np.ndarray,
    n_clients: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    *,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Partition samples (given by their ``labels``) among ``n_clients``.

    ``scheme``: ``"iid"`` (``alpha`` ignored) or ``"dirichlet"`` (label skew with
    concentration ``alpha``; each client gets at least ``min_size`` samples).
    """
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; expected one of {', '.join(PARTITION_SCHEMES)}")
    labels = _check_labels(labels)
    if scheme == "iid":
        return partition_iid(len(labels), n_clients, seed)
    return partition_dirichlet(labels, n_clients, alpha, seed, min_size=min_size)
