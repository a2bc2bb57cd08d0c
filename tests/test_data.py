"""Tests for advlab.data: IDX and CIFAR readers on files made here, search order, splits,
synthetic sets, npz, and the real Fashion-MNIST when the Debian package is installed."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from advlab.data import (
    DATASETS,
    DatasetFormatError,
    DatasetNotFoundError,
    dataset_names,
    dataset_status,
    load_dataset,
    read_batch,
    read_idx_images,
    read_idx_labels,
)
from advlab.data import idx as idx_module

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- IDX helpers
def write_idx(path: Path, array: np.ndarray, gz: bool = False, count: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file; ``count`` overrides the first dimension."""
    magic = 0x0800 | array.ndim
    dims = list(array.shape)
    if count is not None:
        dims[0] = count
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *dims) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_dir(directory: Path, n_train: int = 12, n_test: int = 6, gz: bool = True,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Fake (Fashion-)MNIST IDX files in ``directory``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.fixture()
def no_system_data(monkeypatch):
    """Hide $ADVLAB_DATA and the system directories, so only what a test passes is found."""
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    monkeypatch.setattr(idx_module, "SYSTEM_DIRS", {"fashion-mnist": (), "mnist": ()})


# ----------------------------------------------------------------------------- IDX reader
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    images_path = write_idx(tmp_path / "a-images-idx3-ubyte", images, gz)
    labels_path = write_idx(tmp_path / "a-labels-idx1-ubyte", labels, gz)
    np.testing.assert_array_equal(read_idx_images(images_path), images)
    np.testing.assert_array_equal(read_idx_labels(labels_path), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_from_data_dir(tmp_path, no_system_data, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    train = load_dataset("Fashion_MNIST", data_dir=tmp_path)
    test = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (6, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.x.is_contiguous()
    np.testing.assert_allclose(train.x[:, 0].numpy(), arrays["train"][0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(test.y.numpy(), arrays["t10k"][1])
    assert train.info.class_names[0] == "T-shirt/top" and train.info.num_classes == 10
    assert train.info.source == str(tmp_path.resolve())


def test_idx_bad_magic(tmp_path, no_system_data):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x09  # type byte: not uint8
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetFormatError, match=r"train-images-idx3-ubyte.*magic"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, no_system_data, gz):
    make_idx_dir(tmp_path, gz=gz)
    path = next(tmp_path.glob("train-images-idx3-ubyte*"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DatasetFormatError, match=r"train-images-idx3-ubyte.*(truncated|corrupt)"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_idx_header_count_mismatch(tmp_path):
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "x-images-idx3-ubyte", images, count=5)  # header says 5
    with pytest.raises(DatasetFormatError, match="x-images-idx3-ubyte.*truncated"):
        read_idx_images(path)


def test_idx_images_labels_disagree(tmp_path, no_system_data):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match=r"12 images.*train-labels-idx1-ubyte.*11 labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_idx_search_order(tmp_path, monkeypatch, no_system_data):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    env = make_idx_dir(env_dir / "fashion-mnist", n_train=3, seed=1)
    arg = make_idx_dir(arg_dir, n_train=4, seed=2)
    monkeypatch.setenv("ADVLAB_DATA", str(env_dir))
    assert len(load_dataset("fashion-mnist", data_dir=arg_dir)) == 4  # data_dir first
    from_env = load_dataset("fashion-mnist")  # then $ADVLAB_DATA/fashion-mnist
    np.testing.assert_array_equal(from_env.y.numpy(), env["train"][1])
    # a data_dir without the files falls through to $ADVLAB_DATA
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "empty")) == 3
    assert arg["train"][0].shape[0] == 4


def test_idx_torchvision_layout(tmp_path, no_system_data):
    make_idx_dir(tmp_path / "FashionMNIST" / "raw", n_train=5)
    make_idx_dir(tmp_path / "MNIST" / "raw", n_train=7)
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path)) == 5
    mnist = load_dataset("mnist", data_dir=tmp_path)
    assert len(mnist) == 7 and mnist.info.class_names == tuple("0123456789")
    assert mnist.info.mean == (0.1307,)


def test_idx_missing_message(tmp_path, no_system_data):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    message = str(info.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "$ADVLAB_DATA" in message and "--data-dir" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert isinstance(info.value, FileNotFoundError)
    assert dataset_status()["fashion-mnist"].startswith("missing")


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.x.dtype == torch.float32 and test.y.dtype == torch.int64
    assert 0 <= float(train.x.min()) and float(train.x.max()) <= 1
    assert torch.bincount(test.y).tolist() == [1000] * 10
    assert abs(float(train.x.mean()) - train.info.mean[0]) < 1e-3
    assert abs(float(train.x.std()) - train.info.std[0]) < 1e-3
    assert train.info.source == str(FASHION_SYSTEM_DIR)
    assert dataset_status()["fashion-mnist"] == f"found at {FASHION_SYSTEM_DIR}"


# ----------------------------------------------------------------------------- CIFAR
def make_cifar_dir(directory: Path, per_batch: int = 3) -> dict[str, tuple[np.ndarray, list]]:
    """Tiny fake cifar-10-batches-py: five train batches, a test batch and batches.meta."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        # alternate bytes keys (as Python 2 wrote them) and str keys
        batch = {b"data": data, b"labels": labels} if index % 2 else {"data": data, "labels": labels}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2 if index % 2 else 4))
        written[name] = (data, labels)
    names = [f"class{i}".encode() for i in range(10)]
    (directory / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return written


def test_cifar_fake_batches(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    written = make_cifar_dir(tmp_path / "cifar-10-batches-py")
    train = load_dataset("CIFAR10", data_dir=tmp_path)
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "cifar-10-batches-py")
    assert train.x.shape == (15, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    data, labels = written["data_batch_2"]
    np.testing.assert_allclose(train.x[3:6].numpy(), data.reshape(3, 3, 32, 32) / 255.0, atol=1e-7)
    assert train.y[3:6].tolist() == labels
    assert train.info.class_names[9] == "class9" and train.info.input_shape == (3, 32, 32)
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    assert len(load_dataset("cifar10", "test")) == 3


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["data", "top"])
def test_cifar_malicious_pickle_refused(tmp_path, monkeypatch, where):
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    make_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    evil = _Evil(marker)
    payload = {"data": evil, "labels": [0]} if where == "data" else evil
    (tmp_path / "test_batch").write_bytes(pickle.dumps(payload))
    with pytest.raises(DatasetFormatError, match=r"refusing to load .*test_batch.*system"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()


def test_cifar_bad_batches(tmp_path):
    (tmp_path / "b1").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetFormatError, match="b1.*3072"):
        read_batch(tmp_path / "b1")
    (tmp_path / "b2").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})[:40])
    with pytest.raises(DatasetFormatError, match="b2"):
        read_batch(tmp_path / "b2")


def test_cifar_missing_message(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)data_batch_1.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", data_dir=tmp_path)


# ----------------------------------------------------------------------------- generated / bundled
def test_digits():
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.x.shape == (1397, 1, 8, 8) and test.x.shape == (400, 1, 8, 8)
    assert float(train.x.max()) == 1.0 and float(train.x.min()) == 0.0
    assert set(test.y.tolist()) == set(range(10))
    # the test split does not depend on the seed
    assert torch.equal(load_dataset("digits", "test", seed=5).x, test.x)


def test_digits_matches_conftest_fixture(digits):
    x_train, y_train, x_test, y_test = digits
    assert torch.equal(load_dataset("digits").x, x_train)
    assert torch.equal(load_dataset("digits", "test").y, y_test)


@pytest.mark.parametrize("name", ["spirals", "moons"])
def test_toy_sets(name):
    train = load_dataset(name, n_samples=300, seed=3)
    again = load_dataset(name, n_samples=300, seed=3)
    other = load_dataset(name, n_samples=300, seed=4)
    test = load_dataset(name, "test", n_samples=300, seed=3)
    assert train.x.shape == (300, 2) and train.info.input_shape == (2,)
    assert 0 <= float(train.x.min()) and float(train.x.max()) <= 1
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)
    assert not torch.equal(train.x, other.x) and not torch.equal(train.x, test.x)
    assert torch.bincount(train.y).tolist() == [150, 150]
    assert train.info.source == "generated" and train.info.num_classes == 2


def test_spirals_geometry_and_label_noise():
    clean = load_dataset("spirals", seed=1, noise=0.0)
    # the two arms are point reflections of each other through the centre (0.5, 0.5)
    radius = (clean.x - 0.5).norm(dim=1)
    assert float(radius.max()) <= 0.45 + 1e-5
    noisy = load_dataset("spirals", seed=1, noise=0.0, label_noise=0.1)
    assert torch.equal(clean.x, noisy.x)
    assert int((clean.y != noisy.y).sum()) == 100
    noisy_test = load_dataset("spirals", "test", seed=1, noise=0.0, label_noise=0.1)
    assert torch.equal(noisy_test.y, load_dataset("spirals", "test", seed=1, noise=0.0).y)
    with pytest.raises(ValueError, match="label_noise"):
        load_dataset("spirals", label_noise=1.5)


# ----------------------------------------------------------------------------- splits, subsets
def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(row) for row in x.flatten(1).tolist()}


def test_val_split_disjoint_and_covering():
    full = load_dataset("spirals", n_samples=200, seed=2)
    train = load_dataset("spirals", "train", val_fraction=0.25, n_samples=200, seed=2)
    val = load_dataset("spirals", "val", val_fraction=0.25, n_samples=200, seed=2)
    assert len(train) == 150 and len(val) == 50 and val.split == "val"
    assert _rows(train.x).isdisjoint(_rows(val.x))
    assert _rows(train.x) | _rows(val.x) == _rows(full.x)
    assert len(load_dataset("digits", "val")) == 140  # default val_fraction 0.1
    other = load_dataset("digits", "val", seed=1)
    assert not torch.equal(other.x, load_dataset("digits", "val").x)


def test_subset_n_seeded():
    a = load_dataset("digits", "test", n=50, seed=7)
    b = load_dataset("digits", "test", n=50, seed=7)
    c = load_dataset("digits", "test", n=50, seed=8)
    assert len(a) == 50 and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert _rows(a.x) <= _rows(load_dataset("digits", "test").x)
    with pytest.raises(ValueError, match="n must be"):
        load_dataset("digits", "test", n=401)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*fashion-mnist.*spirals"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", "validation")
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\)"):
        load_dataset("digits", "val", val_fraction=1.0)
    with pytest.raises(ValueError, match="val_fraction > 0"):
        load_dataset("digits", "val", val_fraction=0)
    with pytest.raises(TypeError, match="accepts: n_samples, noise"):
        load_dataset("moons", n_sample=10)


def test_dataset_object_and_loaders():
    ds = load_dataset("digits", "test")
    x0, y0 = ds[0]
    assert x0.shape == (1, 8, 8) and y0.dtype == torch.int64
    batches = list(ds.loader(batch_size=128))
    assert [len(b[1]) for b in batches] == [128, 128, 128, 16]
    assert torch.equal(torch.cat([b[0] for b in batches]), ds.x)
    shuffled = [torch.cat([b[1] for b in ds.loader(64, shuffle=True, generator=torch.Generator().manual_seed(0))])
                for _ in range(2)]
    assert torch.equal(shuffled[0], shuffled[1]) and not torch.equal(shuffled[0], ds.y)
    assert sorted(shuffled[0].tolist()) == sorted(ds.y.tolist())
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    x, y = next(iter(DataLoader(ds, batch_size=10, sampler=sampler)))
    assert x.shape == (10, 1, 8, 8) and torch.equal(y, ds.y[1:20:2])
    sub = ds.subset(5)
    assert torch.equal(sub.x, ds.x[:5])
    shuffled_sub = ds.subset(5, generator=torch.Generator().manual_seed(0))
    assert len(shuffled_sub) == 5 and not torch.equal(shuffled_sub.x, ds.x[:5])
    assert torch.equal(ds.subset([3, 1]).y, ds.y[[3, 1]])


def test_registry_and_status():
    assert set(dataset_names()) == set(DATASETS) >= {
        "fashion-mnist", "mnist", "cifar10", "digits", "spirals", "moons", "npz"}
    status = dataset_status()
    assert status["spirals"] == "generated" and status["digits"] == "bundled with scikit-learn"


# ----------------------------------------------------------------------------- npz
def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 1, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 3, size=20)
    x_test = rng.random((6, 1, 4, 4))
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=np.array([0, 1, 2, 3, 0, 1]))
    train = load_dataset("npz", path=path)
    test = load_dataset("npz", "test", data_dir=path)
    np.testing.assert_allclose(train.x.numpy(), x / 255.0, atol=1e-7)
    assert train.info.num_classes == 4 and train.info.input_shape == (1, 4, 4)
    np.testing.assert_allclose(test.x.numpy(), x_test, atol=1e-7)
    only = tmp_path / "only.npz"
    np.savez(only, x=rng.random((8, 5)), y=np.arange(8) % 2)
    held_out, rest = load_dataset("npz", "test", path=only), load_dataset("npz", path=only)
    assert len(held_out) == 2 and len(rest) == 6 and "held-out" in held_out.info.test_split
    assert not set(map(tuple, held_out.x.tolist())) & set(map(tuple, rest.x.tolist()))
    whole = load_dataset("npz", "test", path=only, test_fraction=0)
    assert len(whole) == 8 and "not a held-out" in whole.info.test_split
    assert len(load_dataset("npz", "val", path=only, val_fraction=0.25)) == 2


def test_npz_bad_files(tmp_path):
    bad_range = tmp_path / "range.npz"
    np.savez(bad_range, x=np.full((3, 2), 2.0), y=np.zeros(3, int))
    with pytest.raises(DatasetFormatError, match=r"range\.npz.*\[0, 1\]"):
        load_dataset("npz", path=bad_range)
    no_y = tmp_path / "noy.npz"
    np.savez(no_y, x=np.zeros((3, 2)))
    with pytest.raises(DatasetFormatError, match="needs arrays 'x' and 'y'"):
        load_dataset("npz", path=no_y)
    objects = tmp_path / "obj.npz"
    np.savez(objects, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DatasetFormatError, match="obj.npz"):
        load_dataset("npz", path=objects)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(DatasetFormatError, match="garbage.npz"):
        load_dataset("npz", path=garbage)
    with pytest.raises(DatasetNotFoundError, match="missing.npz"):
        load_dataset("npz", path=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="needs a file"):
        load_dataset("npz")


def test_make_spirals_draws_from_a_torch_generator():
    from advlab.data.synthetic import make_spirals

    first = make_spirals(50, 0.01, generator=torch.Generator().manual_seed(4))
    again = make_spirals(50, 0.01, generator=torch.Generator().manual_seed(4))
    other = make_spirals(50, 0.01, generator=torch.Generator().manual_seed(5))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert sorted(np.bincount(first[1]).tolist()) == [25, 25]
    with pytest.raises(TypeError):
        make_spirals(50, 0.01, torch.Generator())  # the generator is keyword-only
