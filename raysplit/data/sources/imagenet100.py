"""ImageNet-100: RGB photos of 100 ILSVRC-2012 classes arranged as torchvision
ImageFolders (``train/`` and ``val/`` or ``test/``), resized and centre-cropped to a
square side (64 by default) while loading.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..arrays import ArrayDataset
from ..locate import DatasetNotFoundError, candidate_dirs, describe, not_dir
from ..preprocess import images_to_array, stratified_subset
from ..spec import DatasetSpec

__all__ = ["SPEC", "load_imagenet100"]


def load_imagenet100(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    limit: int | None,
    seed: int,
    image_size: int,
) -> ArrayDataset:
    """Load a split: ``Resize(image_size)`` + ``CenterCrop(image_size)`` per image
    (decoded on up to 8 threads); classes are the train folder's class folders, sorted."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    split_dirs = ("train",) if split == "train" else ("val", "test")
    searched = []
    for folder, why in candidate_dirs(spec, data_dir):
        found = next((folder / s for s in split_dirs if (folder / s).is_dir()), None)
        if found is None:
            what = "no " + " or ".join(f"{s}/" for s in split_dirs) + " folder"
            searched.append(describe(folder, why, what if folder.is_dir() else not_dir(folder)))
            continue
        # Class indices come from the train folder for both splits, so they agree.
        class_root = folder / "train" if (folder / "train").is_dir() else found
        classes = sorted(e.name for e in os.scandir(class_root) if e.is_dir())
        if not classes:
            searched.append(describe(class_root, why, "no class folders"))
            continue
        class_to_idx = {c: i for i, c in enumerate(classes)}

        class _Folder(ImageFolder):
            def find_classes(self, directory):
                return list(classes), dict(class_to_idx)

        tf = transforms.Compose(
            [transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.PILToTensor()]
        )
        try:  # a val/test folder may lack some of train's classes
            ds = _Folder(str(found), transform=tf, allow_empty=(split != "train"))
        except TypeError:  # torchvision < 0.18 has no allow_empty
            ds = _Folder(str(found), transform=tf)
        targets = np.asarray(ds.targets, dtype=np.int64)
        if len(targets) == 0:
            raise DatasetNotFoundError(
                spec.name, split, [describe(found, why, "no images")], how_to_get=spec.how_to_get
            )
        sel = stratified_subset(targets, limit, seed)
        idx = np.arange(len(targets)) if sel is None else sel

        def load(i):
            img = ds[int(i)][0].numpy()
            if img.shape[0] == 1:  # defensive: ImageFolder's loader converts to RGB
                img = np.repeat(img, 3, axis=0)
            return img

        out = np.empty((len(idx), 3, image_size, image_size), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for k, img in enumerate(pool.map(load, idx)):
                out[k] = img
        x = images_to_array(out, spec.normalization, spec.name, 1.0 / 255.0, image_size)
        return ArrayDataset(spec.name, x, targets[idx], len(classes), tuple(classes))
    raise DatasetNotFoundError(spec.name, split, searched, how_to_get=spec.how_to_get)


SPEC = DatasetSpec(
    name="imagenet100",
    num_classes=None,  # as many as the train folder's class folders (100 normally)
    native_size=None,
    default_image_size=64,
    channels=3,
    normalization=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    subfolders=("imagenet100", "imagenet-100", "ImageNet100"),
    classes=(),
    how_to_get=(
        "Arrange the ImageNet-100 images (100 ILSVRC-2012 classes) as torchvision ImageFolders: "
        "<dir>/train/<class>/<image> and <dir>/val/<class>/<image> (or <dir>/test/...), class "
        "folders named alike in both; then pass --data-dir <dir> or set RAYSPLIT_DATA."
    ),
    loader=load_imagenet100,
    source=(
        "100 classes of ILSVRC-2012 (Russakovsky et al. 2015). Normalisation: ImageNet's usual "
        "constants (torchvision's)."
    ),
)
