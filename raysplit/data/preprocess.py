"""Array preprocessing shared by the loaders: the seeded class-stratified subset behind
``limit``, scaling pixels to [0, 1], bilinear resizing, per-channel normalisation, and
centred padding of small grey images (in pixel space, before normalising, so padding is
black).
"""

from __future__ import annotations

import numpy as np

from .locate import CorruptDatasetError

__all__ = ["Normalization", "stratified_subset", "take_subset", "resize", "normalise", "images_to_array", "pad_or_resize"]

#: Per-channel ``((mean, ...), (std, ...))`` of the [0, 1]-scaled pixels, used as ``(x - mean) / std``.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of a seeded, class-stratified subset of ``limit`` samples (None = all).

    Each class gets ``limit * n_c / n`` samples rounded down, the remainder going to the
    classes with the largest fractional parts; within a class the samples are drawn
    without replacement by ``default_rng(seed)``. Returned sorted (original order).
    """
    n = len(labels)
    if limit is None or limit >= n:
        return None
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = limit * counts / n
    take = np.floor(quota).astype(np.int64)
    rest = limit - int(take.sum())
    if rest > 0:
        take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=int(t), replace=False)
              for k, t in enumerate(take) if t > 0]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def take_subset(data: np.ndarray, labels: np.ndarray, limit: int | None,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(data, labels)`` cut to :func:`stratified_subset`'s samples (unchanged for all)."""
    sel = stratified_subset(labels, limit, seed)
    return (data, labels) if sel is None else (data[sel], labels[sel])


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float32 (N, C, H, W) to (N, C, size, size), antialiased when
    shrinking; ``x`` itself when it already has that size (torch is imported only then)."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    import torch
    import torch.nn.functional as F

    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.float32)
    shrink = size < x.shape[2] or size < x.shape[3]
    step = 2048
    with torch.no_grad():
        for lo in range(0, len(x), step):
            t = torch.from_numpy(np.ascontiguousarray(x[lo:lo + step]))
            r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
            out[lo:lo + step] = r.numpy()
    return out


def normalise(x01: np.ndarray, normalization: Normalization, name: str) -> np.ndarray:
    """In place: (x - mean[c]) / std[c] on [0, 1]-scaled float32 (N, C, H, W); ``name``
    (the data set) labels the error when the channel count does not match."""
    mean, std = normalization
    if x01.shape[1] != len(mean):
        raise CorruptDatasetError(f"{name}: expected {len(mean)} channels, got {x01.shape[1]}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x01 -= m
    x01 /= s
    return x01


def images_to_array(
    raw: np.ndarray, normalization: Normalization, name: str, scale: float, size: int
) -> np.ndarray:
    """uint8/float (N, C, H, W) -> float32 (N, C, size, size): scaled to [0, 1] by ``scale``,
    resized, normalised; in chunks of 4096 images, which bounds the temporaries of the
    float conversion and the resize."""
    step = 4096
    parts = []
    for lo in range(0, len(raw), step):
        chunk = raw[lo:lo + step].astype(np.float32) * np.float32(scale)
        parts.append(normalise(resize(chunk, size), normalization, name))
    if not parts:
        return np.empty((0, raw.shape[1], size, size), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def pad_or_resize(u8: np.ndarray, normalization: Normalization, name: str, size: int) -> np.ndarray:
    """uint8 grey (N, H, W) -> float32 (N, 1, size, size): centred zero-padding when
    ``size`` is at least H and W (padding is black, i.e. -mean/std after normalising),
    bilinear resize below."""
    (mean,), (std,) = normalization
    n, h, w = u8.shape
    if size < h or size < w:
        return images_to_array(u8[:, None], normalization, name, 1.0 / 255.0, size)
    out = np.full((n, 1, size, size), -mean / std, dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    view = out[:, 0, top:top + h, left:left + w]
    np.multiply(u8, np.float32(1.0 / (255.0 * std)), out=view, casting="unsafe")
    view -= np.float32(mean / std)
    return out
