"""What raysplit knows about one data set, as a frozen :class:`DatasetSpec`: its classes,
image sizes, normalisation constants, where its files may sit, how to get it, and the
loader that turns its files into an :class:`~raysplit.data.arrays.ArrayDataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from .arrays import ArrayDataset
from .checks import check_int
from .preprocess import Normalization

__all__ = ["DatasetSpec", "Loader"]


class Loader(Protocol):
    """Loads ``split`` of ``spec``'s data set; arguments are already checked and
    ``image_size`` is resolved (:meth:`DatasetSpec.image_size`)."""

    def __call__(
        self,
        spec: DatasetSpec,
        split: str,
        data_dir: str | os.PathLike | None,
        *,
        limit: int | None,
        seed: int,
        image_size: int,
    ) -> ArrayDataset: ...


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One data set, as :func:`~raysplit.data.load.load_dataset` knows it.

    Args:
        name: the name ``load_dataset`` takes (``"fashion-mnist"``).
        num_classes: number of classes; None when the files decide (imagenet100's class
            folders).
        native_size: side of the stored images, px; None when they vary (imagenet100).
        default_image_size: side used when ``image_size`` is None; None to keep
            ``native_size``.
        channels: image channels (1 grey, 3 RGB).
        normalization: per-channel ``((mean...), (std...))`` of the [0, 1]-scaled pixels.
        subfolders: subfolders of a data folder searched too (after the folder itself).
        classes: class names, index = label; ``()`` when read from the files.
        how_to_get: how to obtain the files (ends the not-found error).
        loader: the callable doing the work (:class:`Loader`).
        source: citation, and where the normalisation numbers come from.
    """

    name: str
    num_classes: int | None
    native_size: int | None
    default_image_size: int | None
    channels: int
    normalization: Normalization
    subfolders: tuple[str, ...]
    classes: tuple[str, ...]
    how_to_get: str
    loader: Loader
    source: str

    def __post_init__(self) -> None:
        mean, std = self.normalization
        if not len(mean) == len(std) == self.channels:
            raise ValueError(
                f"DatasetSpec {self.name!r}: normalization needs {self.channels} means and stds, "
                f"got {len(mean)} and {len(std)}"
            )
        if self.default_image_size is None and self.native_size is None:
            raise ValueError(f"DatasetSpec {self.name!r}: needs a default_image_size or a native_size")

    def image_size(self, requested: int | None) -> int:
        """Side of the square images the loader produces for ``image_size=requested``:
        ``requested``, else ``default_image_size``, else ``native_size``; lets callers
        size a model's input without loading the data.
        """
        if requested is not None:
            return check_int(requested, "image_size", 1)
        size = self.default_image_size if self.default_image_size is not None else self.native_size
        assert size is not None  # __post_init__ guarantees one of them
        return size
