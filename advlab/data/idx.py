"""MNIST and Fashion-MNIST from local IDX files (LeCun et al. 1998; Xiao, Rasul, Vollgraf 2017).

The IDX format is a 4-byte magic number ``0x0000 <type> <ndim>`` (type 0x08 = uint8), then
``ndim`` big-endian uint32 dimensions, then the raw bytes. Images are ``0x00000803``
(N, rows, cols), labels ``0x00000801`` (N,). Files may be gzip-compressed.

Where the files are looked for, in order (first directory holding both files of the split wins):
the ``data_dir`` argument, ``$ADVLAB_DATA``, each of those with the dataset's sub-directory
(``fashion-mnist``) and torchvision's layout (``FashionMNIST/raw``), then the system directory
of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from advlab.data.base import (
    Dataset,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    make_dataset,
    source_name,
)
from advlab.data.registry import register_dataset

logger = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))

#: dataset name -> sub-directories tried under data_dir and $ADVLAB_DATA.
SUBDIRS = {
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
    "mnist": ("mnist", "MNIST/raw"),
}
#: dataset name -> system-wide directories (Debian packages); tests may monkeypatch this.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (Path("/usr/share/datasets/mnist"),),
}
#: train-set statistics (Xiao et al. 2017; the usual MNIST constants).
STATS = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}
HOW_TO_GET = {
    "fashion-mnist": "install it with `sudo apt-get install dataset-fashion-mnist` "
                     "(files land in /usr/share/datasets/fashion-mnist)",
    "mnist": "copy the four MNIST IDX files into a directory",
}


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetFormatError(f"{path}: truncated or corrupt gzip file ({err})") from err
    return data


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, magic: int, _mtime_ns: int, _size: int) -> np.ndarray:
    data = _read_bytes(Path(path))
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    if len(data) < 4:
        raise DatasetFormatError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetFormatError(
            f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {kind}; "
            "the file is corrupt or not an IDX file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DatasetFormatError(
            f"{path}: the header promises {dims} = {expected} bytes of {kind} but the file has "
            f"{len(data) - header}; it is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    array.flags.writeable = False  # shared by the cache
    return array


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Read one IDX file (gzip or raw) as a read-only uint8 array, checking the magic number
    and that the byte count matches the header. Results are cached by path and mtime."""
    path = Path(path)
    stat = path.stat()
    return _read_idx_cached(str(path.resolve()), magic, stat.st_mtime_ns, stat.st_size)


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Images of an IDX3 file: uint8 array (N, rows, cols)."""
    return read_idx(path, IMAGES_MAGIC)


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Labels of an IDX1 file: uint8 array (N,)."""
    return read_idx(path, LABELS_MAGIC)


def _idx_file(directory: Path, prefix: str, kind: str) -> Path | None:
    """``<prefix>-<kind>-idx?-ubyte[.gz]`` (or the ``<prefix>-<kind>.idx?-ubyte`` spelling)."""
    ndim = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for suffix in ("", ".gz"):
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    """Directories searched for dataset ``name``, in order."""
    bases = [Path(b).expanduser() for b in (data_dir, os.environ.get("ADVLAB_DATA")) if b]
    for base in bases:
        yield base
        for sub in SUBDIRS[name]:
            yield base / sub
    yield from SYSTEM_DIRS[name]


def find_idx_files(name: str, split: str, data_dir: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """(images, labels) paths of ``split`` ("train" or "test") or DatasetNotFoundError."""
    prefix = "train" if split == "train" else "t10k"
    looked = []
    for directory in candidate_dirs(name, data_dir):
        looked.append(directory)
        images, labels = _idx_file(directory, prefix, "images"), _idx_file(directory, prefix, "labels")
        if images is not None and labels is not None:
            base = Path(data_dir).expanduser() if data_dir is not None else None
            if base is not None and directory != base and base not in directory.parents:
                logger.warning("no %s IDX files under %s; using %s", name, base, directory)
            return images, labels
    places = "\n".join(f"  - {d}" for d in looked)
    raise DatasetNotFoundError(
        f"{name} ({split} split) not found: looked for {prefix}-images-idx3-ubyte[.gz] and "
        f"{prefix}-labels-idx1-ubyte[.gz] in\n{places}\n"
        f"To get it, {HOW_TO_GET[name]}, or pass --data-dir (data_dir=...) / set $ADVLAB_DATA "
        "to a directory holding the IDX files. advlab never downloads data."
    )


def load_idx_dataset(name: str, split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    """The ``split`` of an IDX dataset as x (N, 1, rows, cols) in [0, 1] and y (N,)."""
    images_path, labels_path = find_idx_files(name, split, data_dir)
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; the files do not belong together"
        )
    if len(labels) and labels.max() >= 10:
        raise DatasetFormatError(f"{labels_path}: label {labels.max()} is not in 0..9")
    x = images.astype(np.float32)[:, None]  # (N, 1, rows, cols)
    np.divide(x, 255.0, out=x)
    mean, std = STATS[name]
    info = DatasetInfo(
        name=name, num_classes=10, input_shape=tuple(x.shape[1:]),
        class_names=FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES,
        mean=(mean,), std=(std,), source=source_name(images_path.parent),
    )
    return make_dataset(x, labels, info, split)


@register_dataset("fashion-mnist", status=lambda data_dir: idx_status("fashion-mnist", data_dir))
def load_fashion_mnist(split: str, *, data_dir: str | os.PathLike[str] | None = None,
                       seed: int = 0) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60000 train / 10000 test images (1, 28, 28)."""
    return load_idx_dataset("fashion-mnist", split, data_dir)


@register_dataset("mnist", status=lambda data_dir: idx_status("mnist", data_dir))
def load_mnist(split: str, *, data_dir: str | os.PathLike[str] | None = None,
               seed: int = 0) -> Dataset:
    """MNIST (LeCun et al. 1998): 60000 train / 10000 test images (1, 28, 28)."""
    return load_idx_dataset("mnist", split, data_dir)


def idx_status(name: str, data_dir: str | os.PathLike[str] | None = None) -> str:
    """"found at DIR" or "missing: how to get it" for ``advlab info``."""
    try:
        images, _ = find_idx_files(name, "train", data_dir)
    except DatasetNotFoundError:
        return f"missing: {HOW_TO_GET[name]}, or pass --data-dir / set $ADVLAB_DATA"
    return f"found at {images.parent}"
