"""Datasets: a registry of loaders returning in-memory tensors in [0, 1]; nothing is downloaded.

    ds = load_dataset("fashion-mnist", split="test")      # x (10000, 1, 28, 28), y (10000,)
    val = load_dataset("digits", split="val", val_fraction=0.2, seed=1)
    for x, y in ds.loader(batch_size=256): ...

Names: ``fashion-mnist``, ``mnist`` (IDX files), ``cifar10`` (python batches, read without
unpickling arbitrary objects), ``digits`` (scikit-learn), ``spirals``, ``moons`` (generated),
``npz`` (your arrays), ``file`` (your npz, .pt, .safetensors or image folder, by content:
``load_dataset("file", path=...)``). ``dataset_status()`` says which are available on this machine.
"""

from __future__ import annotations

# Importing the loader modules registers them in DATASETS.
from advlab.data import cifar, files, idx, npz, synthetic  # noqa: F401
from advlab.data.base import Dataset, DatasetFormatError, DatasetInfo, DatasetNotFoundError
from advlab.data.cifar import SafeUnpickler, read_batch
from advlab.data.idx import read_idx_images, read_idx_labels
from advlab.data.registry import (
    DATASETS,
    dataset_names,
    dataset_status,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "SafeUnpickler",
    "dataset_names",
    "dataset_status",
    "load_dataset",
    "read_batch",
    "read_idx_images",
    "read_idx_labels",
    "register_dataset",
]
