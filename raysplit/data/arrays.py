"""The in-memory data set every loader returns: normalised float32 images ``(N, C, H, W)``
and int64 labels, kept as numpy arrays because they travel through Ray's object store far
faster than tensors or torch ``Dataset`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ArrayDataset"]


@dataclass(frozen=True, eq=False, repr=False)
class ArrayDataset:
    """An in-memory image classification data set.

    ``x``: float32 ``(N, C, H, W)``, C-contiguous, normalised; ``y``: int64 ``(N,)``
    with values in ``[0, num_classes)``; ``classes``: optional class names.
    Inputs are converted to those dtypes on construction (no copy when they already
    match).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        y = np.ascontiguousarray(self.y, dtype=np.int64)
        if x.ndim != 4:
            raise ValueError(f"ArrayDataset {self.name!r}: x must be (N, C, H, W), got shape {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"ArrayDataset {self.name!r}: y must be (N,) with N = len(x) = {len(x)}, got shape {y.shape}"
            )
        num_classes = int(self.num_classes)
        if num_classes < 1:
            raise ValueError(f"ArrayDataset {self.name!r}: num_classes must be >= 1, got {self.num_classes!r}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"ArrayDataset {self.name!r}: labels must lie in [0, {num_classes}), "
                f"got min {int(y.min())} max {int(y.max())}"
            )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, idx: np.ndarray) -> "ArrayDataset":
        """A new data set with the samples at ``idx`` (integer indices or a boolean mask)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"subset: boolean mask must have shape ({len(self)},), got {idx.shape}")
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"subset: indices must be integers or a boolean mask, got dtype {idx.dtype}")
        return ArrayDataset(self.name, self.x[idx], self.y[idx], self.num_classes, self.classes)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )
