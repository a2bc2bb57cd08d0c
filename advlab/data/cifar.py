"""CIFAR-10 (Krizhevsky 2009) from its "python version" batches, read without trusting pickle.

The batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, optional ``batches.meta``)
are pickled dicts holding a uint8 array ``data`` (N, 3072) and a list ``labels``. Unpickling
can run arbitrary code, so :class:`SafeUnpickler` only lets through the few globals that
numpy array reconstruction needs and refuses everything else before it is imported
(the "restricting globals" recipe of the Python ``pickle`` documentation).
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import Any

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

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
SUBDIR = "cifar-10-batches-py"
HOW_TO_GET = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
    f"extract it and pass --data-dir (data_dir=...) pointing at {SUBDIR}/ or set $ADVLAB_DATA "
    "to the directory that contains it"
)

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array reconstructor, whatever its module
_SCALAR = np.int64(0).__reduce__()[0]  # numpy's scalar reconstructor
#: (module, name) -> object: everything a pickled dict of numpy arrays can need.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes in protocol-2 pickles
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that admits only :data:`ALLOWED_GLOBALS`; any other global (``os.system``,
    ``builtins.eval``, a class with ``__reduce__``) raises DatasetFormatError before import."""

    def __init__(self, file: Any, path: str | os.PathLike[str]) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DatasetFormatError(
                f"refusing to load {self.path}: it tries to import {module}.{name}, which a "
                "CIFAR-10 batch never needs (only numpy arrays, lists and dicts are allowed); "
                "the file is corrupt or malicious"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetFormatError(f"refusing to load {self.path}: it uses persistent ids")


def safe_unpickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`; any failure is a DatasetFormatError."""
    try:
        with open(path, "rb") as fh:
            return SafeUnpickler(fh, path).load()
    except DatasetFormatError:
        raise
    except Exception as err:  # truncated stream, bad opcode, wrong numpy state, ...
        raise DatasetFormatError(f"{path}: not a readable CIFAR-10 pickle ({err!r})") from err


def _field(batch: dict[Any, Any], key: str) -> Any:
    for candidate in (key, key.encode()):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    batch = safe_unpickle(path)
    try:
        if not isinstance(batch, dict):
            raise TypeError(f"expected a dict, found {type(batch).__name__}")
        data, labels = _field(batch, "data"), np.asarray(_field(batch, "labels"))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3 * 32 * 32:
            raise TypeError(f"'data' must be a uint8 array (N, 3072), found {getattr(data, 'shape', data)!r}")
        if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
            raise TypeError(f"'labels' must be {len(data)} integers, found shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= 10):
            raise TypeError(f"labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    except (KeyError, TypeError) as err:
        raise DatasetFormatError(f"{path}: not a CIFAR-10 batch ({err})") from err
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(directory: Path) -> tuple[str, ...]:
    meta_path = directory / "batches.meta"
    if not meta_path.is_file():
        return CLASSES
    meta = safe_unpickle(meta_path)
    try:
        names = _field(meta, "label_names")
    except (KeyError, TypeError) as err:
        raise DatasetFormatError(f"{meta_path}: no label_names ({err})") from err
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    if len(names) != 10:
        raise DatasetFormatError(f"{meta_path}: expected 10 label_names, found {len(names)}")
    return names


def find_cifar_dir(split: str, data_dir: str | os.PathLike[str] | None) -> Path:
    """The first directory holding every batch file of ``split``; DatasetNotFoundError else."""
    files = TRAIN_FILES if split == "train" else TEST_FILES
    bases = [Path(b).expanduser() for b in (data_dir, os.environ.get("ADVLAB_DATA")) if b]
    looked = [d for base in bases for d in (base, base / SUBDIR)]
    for directory in looked:
        if all((directory / f).is_file() for f in files):
            return directory
    places = "\n".join(f"  - {d}" for d in looked) or "  (no data_dir given and $ADVLAB_DATA unset)"
    raise DatasetNotFoundError(
        f"cifar10 ({split} split) not found: looked for {', '.join(files)} in\n{places}\n"
        f"To get it, {HOW_TO_GET}. advlab never downloads data."
    )


@register_dataset("cifar10", status=lambda data_dir: cifar_status(data_dir))
def load_cifar10(split: str, *, data_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test colour images, x (N, 3, 32, 32) in [0, 1]."""
    directory = find_cifar_dir(split, data_dir)
    parts = [read_batch(directory / f) for f in (TRAIN_FILES if split == "train" else TEST_FILES)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = images.astype(np.float32)
    np.divide(x, 255.0, out=x)
    info = DatasetInfo(name="cifar10", num_classes=10, input_shape=(3, 32, 32),
                       class_names=_class_names(directory), mean=MEAN, std=STD,
                       source=source_name(directory))
    return make_dataset(x, labels, info, split)


def cifar_status(data_dir: str | os.PathLike[str] | None = None) -> str:
    """"found at DIR" or "missing: how to get it"."""
    try:
        return f"found at {find_cifar_dir('train', data_dir)}"
    except DatasetNotFoundError:
        return f"missing: {HOW_TO_GET}"
