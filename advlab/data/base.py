"""Dataset containers shared by every loader: :class:`DatasetInfo`, :class:`Dataset`, errors.

A :class:`Dataset` holds the whole split in memory as two tensors, ``x`` of shape
``(N, C, H, W)`` or ``(N, D)`` (float32 in ``[0, 1]``) and ``y`` of shape ``(N,)`` (int64).
It is map-style, so ``torch.utils.data.DataLoader`` and ``DistributedSampler`` work on it;
:meth:`Dataset.loader` is a faster shortcut that slices whole batches at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from torch.utils.data import Dataset as TorchDataset

SPLITS = ("train", "val", "test")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not on this machine; the message says where we looked and how
    to get them (advlab never downloads anything)."""


class DatasetFormatError(ValueError):
    """A dataset file is corrupt, truncated or not what it claims to be; the message names it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    ``mean``/``std`` are the suggested per-channel (or per-feature) normalisation constants
    for :class:`advlab.models.Normalize`; ``source`` is the directory or file the data was read
    from, or ``"generated"`` / ``"scikit-learn"``.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    #: how the test split was formed: ``"given"`` (the dataset's own test set) or, for a user
    #: file with a single set, ``"held-out 20% of the file (seed 0), never trained on"``.
    test_split: str = "given"


@dataclass(eq=False)
class Dataset(TorchDataset[tuple[Tensor, Tensor]]):
    """One split of a dataset, in memory: ``x`` (N, C, H, W) or (N, D) float32 in [0, 1],
    ``y`` (N,) int64.

    ``ds[i]`` returns ``(x[i], y[i])``; ``ds[index_tensor]`` or ``ds[list_of_ints]`` returns a
    whole batch ``(x[idx], y[idx])`` at once (used by :meth:`loader`).
    """

    x: Tensor
    y: Tensor
    info: DatasetInfo
    split: str

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.y.dtype != torch.int64:
            raise TypeError(
                f"Dataset needs x float32 and y int64, got {self.x.dtype} and {self.y.dtype}"
            )
        if self.x.dim() < 2 or self.y.dim() != 1 or len(self.x) != len(self.y):
            raise ValueError(
                f"Dataset needs x of shape (N, ...) and y of shape (N,), got "
                f"{tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: Any) -> tuple[Tensor, Tensor]:
        if isinstance(index, (list, tuple, np.ndarray)):
            index = torch.as_tensor(index, dtype=torch.long)
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.info.name!r}, split={self.split!r}, n={len(self)}, "
            f"x={tuple(self.x.shape)}, num_classes={self.info.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.info.input_shape

    def subset(
        self, n_or_indices: int | Sequence[int] | np.ndarray | Tensor, *,
        generator: torch.Generator | None = None,
    ) -> Dataset:
        """A new Dataset with some of the samples.

        An int ``n`` takes the first ``n`` samples, after a shuffle by ``generator`` when one is
        given; a sequence / tensor of indices (or a boolean mask) takes exactly those.
        """
        if isinstance(n_or_indices, int) and not isinstance(n_or_indices, bool):
            n = n_or_indices
            if not 0 <= n <= len(self):
                raise ValueError(f"subset size {n} is outside 0..{len(self)} for {self!r}")
            if generator is None:
                index = torch.arange(n)
            else:
                index = torch.randperm(len(self), generator=generator)[:n]
        else:
            index = torch.as_tensor(n_or_indices)
            if index.dtype != torch.bool:
                index = index.long()
        return replace(self, x=self.x[index].contiguous(), y=self.y[index].contiguous())

    def to(self, device: str | torch.device) -> Dataset:
        """The same samples on ``device`` (a no-op copy-free view when already there)."""
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def loader(
        self,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader yielding ``(x, y)`` batches, sliced from memory a batch at a time
        (no per-sample collation). ``shuffle`` draws the order from ``generator``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sampler = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
        # batch_size=None: each "sample" the sampler yields is already a list of indices.
        return DataLoader(self, sampler=batches, batch_size=None)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (dim 1) mean and std of ``x`` (N, C, ...) or per-feature of ``x`` (N, D)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)  # constant channels: do not divide by zero
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def make_dataset(x: np.ndarray | Tensor, y: np.ndarray | Tensor, info: DatasetInfo, split: str) -> Dataset:
    """Wrap arrays as a :class:`Dataset` (float32 contiguous x, int64 y; no range check)."""
    # np.require copies read-only (e.g. cached) or non-contiguous arrays before torch shares them
    x_t = torch.as_tensor(np.require(x, requirements=["C", "W"]) if isinstance(x, np.ndarray) else x)
    y_t = torch.as_tensor(np.require(y, requirements=["C", "W"]) if isinstance(y, np.ndarray) else y)
    return Dataset(x=x_t.to(torch.float32).contiguous(), y=y_t.to(torch.int64).contiguous(),
                   info=info, split=split)


def validate(dataset: Dataset) -> Dataset:
    """Check the invariants every loader promises; raise DatasetFormatError if one fails."""
    x, y, info = dataset.x, dataset.y, dataset.info
    where = f"{info.name} ({info.source})"
    if len(x) == 0:
        return dataset
    check_finite(x, where)
    lo, hi = torch.aminmax(x)
    if not (lo >= 0 and hi <= 1):
        raise DatasetFormatError(
            f"{where}: inputs must lie in [0, 1], found min {lo.item()} max {hi.item()}; "
            "rescale them (normalisation belongs in the model: --mean/--std)"
        )
    y_lo, y_hi = torch.aminmax(y)
    if y_lo < 0 or y_hi >= info.num_classes:
        raise DatasetFormatError(
            f"{where}: labels must lie in 0..{info.num_classes - 1}, "
            f"found {y_lo.item()}..{y_hi.item()}"
        )
    if tuple(x.shape[1:]) != info.input_shape:
        raise DatasetFormatError(
            f"{where}: samples have shape {tuple(x.shape[1:])}, expected {info.input_shape}"
        )
    return dataset


def check_finite(x: Tensor | np.ndarray, where: str) -> None:
    """Raise DatasetFormatError naming how many NaN and inf values ``x`` holds, if any."""
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        return
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    if nan or inf:
        raise DatasetFormatError(
            f"{where}: inputs contain {nan} NaN and {inf} inf value(s) (of {t.numel()}); "
            "replace or drop those samples first (e.g. np.nan_to_num, or a mask)"
        )


def source_name(path: str | Path) -> str:
    """The ``source`` string recorded for a file or directory."""
    return str(Path(path).resolve())


def replace_info(dataset: Dataset, **changes: Any) -> Dataset:
    """The same samples with some :class:`DatasetInfo` fields changed."""
    return replace(dataset, info=replace(dataset.info, **changes))
