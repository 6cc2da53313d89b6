"""Fashion-MNIST: 28x28 grey images of 10 clothing classes, read from the release's idx
files (Debian's ``dataset-fashion-mnist`` installs them where they are found
automatically) and zero-padded to 32x32 by default.
"""

from __future__ import annotations

from ..spec import DatasetSpec
from .gray28 import load_gray28

__all__ = ["SPEC"]

SPEC = DatasetSpec(
    name="fashion-mnist",
    num_classes=10,
    native_size=28,
    # 32: two pixels of padding each side, so a VGG split after [64, M, 128, M] gives
    # 128x8x8 as in the paper.
    default_image_size=32,
    channels=1,
    normalization=((0.2860,), (0.3530,)),
    subfolders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    how_to_get=(
        "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs "
        "/usr/share/datasets/fashion-mnist, found automatically). Otherwise put "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz (the Fashion-MNIST release files) in a folder and "
        "pass it with --data-dir (data_dir=...) or the RAYSPLIT_DATA environment variable; "
        "the folder may also be a parent holding a 'fashion-mnist' subfolder."
    ),
    loader=load_gray28,
    source=(
        "Xiao, Rasul & Vollgraf 2017, Fashion-MNIST (arXiv:1708.07747). Normalisation computed "
        "here on the 60000 unpadded training images: (0.28604, 0.35302)."
    ),
)
