"""CIFAR-10: 32x32 RGB images of 10 classes, read from the extracted python version in
torchvision's folder layout (``<dir>/cifar-10-batches-py``) with torchvision's own parser.
"""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np

from ..arrays import ArrayDataset
from ..locate import CorruptDatasetError, find_root_with
from ..preprocess import images_to_array, take_subset
from ..spec import DatasetSpec

__all__ = ["SPEC", "load_cifar10"]

_FOLDER = "cifar-10-batches-py"
_NEEDED = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("batches.meta",),
    "test": ("test_batch", "batches.meta"),
}


@functools.cache
def _local_cifar10() -> type:
    """torchvision's CIFAR10 whose integrity check is "the files the split needs exist"
    instead of MD5 sums (so hand-made test files and re-packed copies load); torchvision's
    own parsing code is unchanged. Built on first use: importing torchvision is slow."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    class LocalCIFAR10(CIFAR10):
        # md5 None: torchvision's check_integrity() then only checks the file exists
        # (used by its _load_meta for batches.meta).
        train_list = [[f, None] for f, _ in CIFAR10.train_list]
        test_list = [[f, None] for f, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

        def _check_integrity(self) -> bool:
            files = self.train_list if self.train else self.test_list
            return all(check_integrity(os.path.join(self.root, self.base_folder, f)) for f, _ in files)

    return LocalCIFAR10


def load_cifar10(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    limit: int | None,
    seed: int,
    image_size: int,
) -> ArrayDataset:
    """Load a split; class names come from the files' ``batches.meta``."""
    root = find_root_with(spec, split, data_dir, _FOLDER, _NEEDED[split])
    try:
        ds = _local_cifar10()(str(root), train=(split == "train"), download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise CorruptDatasetError(f"{root / _FOLDER}: cannot parse ({type(e).__name__}: {e})") from e
    data = np.asarray(ds.data)  # (N, 32, 32, 3) uint8
    targets = np.asarray(ds.targets, dtype=np.int64)
    data, targets = take_subset(data, targets, limit, seed)
    x = images_to_array(data.transpose(0, 3, 1, 2), spec.normalization, spec.name, 1.0 / 255.0, image_size)
    return ArrayDataset(spec.name, x, targets, spec.num_classes, tuple(ds.classes))


SPEC = DatasetSpec(
    name="cifar10",
    num_classes=10,
    native_size=32,
    default_image_size=None,
    channels=3,
    normalization=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    subfolders=("cifar10", "cifar-10", "CIFAR10"),
    classes=(),
    how_to_get=(
        "Extract CIFAR-10's python version (cifar-10-python.tar.gz) so that "
        "<dir>/cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch,batches.meta} exist "
        "(torchvision's layout; `torchvision.datasets.CIFAR10(<dir>, download=True)` makes it "
        "on a machine with internet access), then pass --data-dir <dir> or set RAYSPLIT_DATA."
    ),
    loader=load_cifar10,
    source=(
        "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images. Normalisation: "
        "training-split statistics, with the true std (not the often-copied 0.2023/0.1994/0.2010)."
    ),
)
