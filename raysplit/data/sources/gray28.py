"""The loader shared by the 28x28 grey MNIST-likes (fashion-mnist, mnist): finds the idx
files (or, for mnist, the ``mnist.pkl.gz`` pickle), checks them, and zero-pads (or
shrinks) the images to the requested side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..arrays import ArrayDataset
from ..formats import read_idx, read_mnist_pickle
from ..locate import (
    CorruptDatasetError,
    DatasetNotFoundError,
    Place,
    candidate_dirs,
    describe,
    first_existing,
    not_dir,
)
from ..preprocess import pad_or_resize, take_subset
from ..spec import DatasetSpec

__all__ = ["load_gray28"]


def load_gray28(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    limit: int | None,
    seed: int,
    image_size: int,
    pickles: Sequence[str] = (),
    extra_roots: Sequence[Place] = (),
    notes: Sequence[str] = (),
) -> ArrayDataset:
    """Load a 28x28 grey data set (a :class:`~raysplit.data.spec.Loader`).

    ``pickles``: names of an MNIST pickle to accept in a folder (or as ``data_dir``
    itself), before the idx files; ``extra_roots``: places searched last when
    ``data_dir`` is None; ``notes``: lines added to the not-found error's "Looked in".
    """
    images, labels = _find(spec, split, data_dir, pickles, extra_roots, notes)
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise CorruptDatasetError(
            f"{spec.name}: labels outside 0..{spec.num_classes - 1} (min {labels.min()}, max {labels.max()})"
        )
    images, labels = take_subset(images, labels, limit, seed)
    x = pad_or_resize(images, spec.normalization, spec.name, image_size)
    return ArrayDataset(spec.name, x, labels, spec.num_classes, spec.classes)


def _find(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    pickles: Sequence[str],
    extra_roots: Sequence[Place],
    notes: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, 28, 28) and int64 labels from the first place holding them."""
    searched = []
    for folder, why in candidate_dirs(spec, data_dir, extra_roots):
        if pickles and folder.is_file():
            return read_mnist_pickle(folder, split)
        if not folder.is_dir():
            searched.append(describe(folder, why, not_dir(folder)))
            continue
        pkl = first_existing(folder, pickles)
        if pkl is not None:
            return read_mnist_pickle(pkl, split)
        pair = _idx_pair(folder, split)
        if pair is None:
            prefix = "train" if split == "train" else "t10k"
            what = f"no {prefix}-images-idx3-ubyte[.gz] + {prefix}-labels-idx1-ubyte[.gz]"
            searched.append(describe(folder, why, what + (f" and no {pickles[0]}" if pickles else "")))
            continue
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise CorruptDatasetError(
                f"{pair[0]}: expected uint8 images (n, 28, 28), got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise CorruptDatasetError(
                f"{pair[1]}: expected {len(images)} labels to match {pair[0]}, got shape {labels.shape}"
            )
        return images, labels.astype(np.int64)
    searched.extend(notes)
    raise DatasetNotFoundError(spec.name, split, searched, how_to_get=spec.how_to_get)


def _idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The split's images and labels idx files in ``folder`` (gzipped or not, and the
    dotted ``*-images.idx3-ubyte`` spelling), or None unless both are there."""
    prefix = "train" if split == "train" else "t10k"
    imgs = first_existing(folder, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte",
                                   f"{prefix}-images.idx3-ubyte"])
    labs = first_existing(folder, [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte",
                                   f"{prefix}-labels.idx1-ubyte"])
    return (imgs, labs) if imgs and labs else None
