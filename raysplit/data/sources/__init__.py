"""The registry of data sets: one :class:`~raysplit.data.spec.DatasetSpec` per data set,
each defined in its own module here, collected in :data:`DATASETS` (iterating it gives
the names, in the order the CLI lists them) and looked up with :func:`get_dataset`.
"""

from __future__ import annotations

from ..spec import DatasetSpec
from . import cifar10, digits, fashion_mnist, imagenet100, mnist, stl10

__all__ = ["DATASETS", "get_dataset"]

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (fashion_mnist.SPEC, mnist.SPEC, digits.SPEC, cifar10.SPEC, stl10.SPEC, imagenet100.SPEC)
}


def get_dataset(name: str) -> DatasetSpec:
    """The spec of data set ``name``; a ``ValueError`` listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}") from None
