"""STL-10: 96x96 RGB images of 10 classes (the labelled train/test splits only), read
from the extracted binary version in torchvision's folder layout (``<dir>/stl10_binary``)
with torchvision's own parser.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ..arrays import ArrayDataset
from ..locate import CorruptDatasetError, find_root_with
from ..preprocess import images_to_array, take_subset
from ..spec import DatasetSpec

__all__ = ["SPEC", "load_stl10"]

_FOLDER = "stl10_binary"
_NEEDED = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}


@functools.cache
def _local_stl10() -> type:
    """torchvision's STL10 whose integrity check is "the split's two files exist" instead
    of MD5 sums (so hand-made test files and re-packed copies load); torchvision's own
    parsing code is unchanged. Built on first use: importing torchvision is slow."""
    from torchvision.datasets import STL10
    from torchvision.datasets.utils import check_integrity

    class LocalSTL10(STL10):
        train_list = [[f, None] for f, _ in STL10.train_list]
        test_list = [[f, None] for f, _ in STL10.test_list]

        def _check_integrity(self) -> bool:
            return all(check_integrity(os.path.join(self.root, self.base_folder, f)) for f in _NEEDED[self.split])

    return LocalSTL10


def load_stl10(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    limit: int | None,
    seed: int,
    image_size: int,
) -> ArrayDataset:
    """Load a split; class names come from the files' ``class_names.txt`` if present."""
    root = find_root_with(spec, split, data_dir, _FOLDER, _NEEDED[split])
    try:
        ds = _local_stl10()(str(root), split=split, download=False)
    except ValueError as e:  # reshape of a file whose size is not n * 3*96*96
        raise CorruptDatasetError(f"{root / _FOLDER}: cannot parse ({e})") from e
    data = np.asarray(ds.data)  # (N, 3, 96, 96) uint8, CHW
    labels = np.asarray(ds.labels, dtype=np.int64)
    if len(labels) != len(data):
        raise CorruptDatasetError(f"{root / _FOLDER}: {len(data)} images but {len(labels)} labels")
    data, labels = take_subset(data, labels, limit, seed)
    classes = tuple(getattr(ds, "classes", ()) or spec.classes)
    x = images_to_array(data, spec.normalization, spec.name, 1.0 / 255.0, image_size)
    return ArrayDataset(spec.name, x, labels, spec.num_classes, classes)


SPEC = DatasetSpec(
    name="stl10",
    num_classes=10,
    native_size=96,
    default_image_size=None,
    channels=3,
    normalization=((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    subfolders=("stl10", "STL10"),
    classes=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
    how_to_get=(
        "Extract STL-10's binary version (stl10_binary.tar.gz) so that "
        "<dir>/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin} exist "
        "(torchvision's layout; `torchvision.datasets.STL10(<dir>, download=True)` makes it "
        "on a machine with internet access), then pass --data-dir <dir> or set RAYSPLIT_DATA."
    ),
    loader=load_stl10,
    source=(
        "Coates, Lee & Ng 2011, An Analysis of Single-Layer Networks in Unsupervised Feature "
        "Learning. Normalisation: training-split statistics."
    ),
)
