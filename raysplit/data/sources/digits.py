"""scikit-learn's bundled 8x8 handwritten digits (1797 images, no files to fetch), with a
fixed class-stratified 80/20 train/test split: the fast data set of the unit tests.
"""

from __future__ import annotations

import os

import numpy as np

from ..arrays import ArrayDataset
from ..preprocess import images_to_array, take_subset
from ..spec import DatasetSpec

__all__ = ["SPEC", "load_digits"]


def load_digits(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    limit: int | None,
    seed: int,
    image_size: int,
) -> ArrayDataset:
    """Load a split (``data_dir`` is ignored: scikit-learn ships the data)."""
    images, labels = _split(split)
    images, labels = take_subset(images, labels, limit, seed)
    x = images_to_array(images, spec.normalization, spec.name, 1.0 / 16.0, image_size)
    return ArrayDataset(spec.name, x, labels, spec.num_classes, spec.classes)


def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 images (n, 1, 8, 8) in 0..16 and int64 labels of the split: 20% of each
    class (drawn with seed 0, whatever the caller's seed) is the test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    d = sklearn_digits()
    images, target = np.asarray(d.images, dtype=np.float32), np.asarray(d.target, dtype=np.int64)
    rng = np.random.default_rng(0)
    test = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(target == c))
        test.append(idx[: int(round(0.2 * len(idx)))])
    test_idx = np.sort(np.concatenate(test))
    mask = np.zeros(len(target), dtype=bool)
    mask[test_idx] = True
    sel = mask if split == "test" else ~mask
    return images[sel][:, None], target[sel]


SPEC = DatasetSpec(
    name="digits",
    num_classes=10,
    native_size=8,
    default_image_size=None,
    channels=1,
    normalization=((0.3053,), (0.3760,)),
    subfolders=(),
    classes=tuple(str(i) for i in range(10)),
    how_to_get="scikit-learn ships it: `pip install scikit-learn`.",
    loader=load_digits,
    source=(
        "scikit-learn's load_digits (the UCI Optical Recognition of Handwritten Digits test "
        "set, pixels 0..16). Normalisation: all 1797 images / 16."
    ),
)
