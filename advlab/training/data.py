"""Training data access for :func:`advlab.training.fit`: batches by index, and the data order.

Data order. Epoch ``e`` (0-based) visits the samples in the order
``torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))``, which is exactly the
order of ``torch.utils.data.DistributedSampler(seed=seed)`` after ``set_epoch(e)``; rank ``r``
of ``W`` takes every ``W``-th index from position ``r`` and cuts it into per-rank batches of
``batch_size // W``. So the ranks' batches together form the same *global* batches a single
process sees, and the order is a pure function of ``(seed, epoch)``: resuming mid-epoch only
needs the epoch and the number of batches already done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from advlab.training.distributed import DistContext

#: Tensor datasets up to this size are copied to the GPU once instead of batch by batch.
_GPU_RESIDENT_BYTES = 2 * 1024**3


def as_training_data(data: Any) -> Any:
    """fit's data in one of the forms :class:`BatchSource` reads: a ``DataLoader`` becomes its
    dataset (fit batches and orders it itself, from ``seed``, so a resume repeats the run),
    numpy arrays ``(x, y)`` become tensors; other inputs are returned as they are."""
    import numpy as np

    if data is None:
        return None
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, (tuple, list)) and len(data) == 2 and any(isinstance(v, np.ndarray) for v in data):
        return tuple(torch.as_tensor(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                     for v in data)
    return data


def _check_labels(y: Tensor) -> Tensor:
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype} (one-hot or "
                         "float labels: use y.argmax(1) or y.long())")
    return y.long()


def as_tensors(data: Any) -> tuple[Tensor, Tensor] | None:
    """``(x, y)`` tensors of an ``(x, y)`` tuple, an ``advlab`` Dataset (``.x``/``.y``) or a
    ``TensorDataset`` of two tensors; ``None`` for other (map-style) datasets."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif isinstance(getattr(data, "x", None), Tensor) and isinstance(getattr(data, "y", None), Tensor):
        x, y = data.x, data.y
    elif isinstance(getattr(data, "tensors", None), tuple) and len(data.tensors) == 2:
        x, y = data.tensors
    else:
        return None
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or len(x) != len(y):
        raise ValueError("training data must be an (x, y) pair of tensors of the same length, "
                         "or a map-style Dataset returning (x, y)")
    return x, y


class BatchSource:
    """Batches ``(x, y)`` on ``device`` for lists of sample indices."""

    def __init__(self, data: Any, device: torch.device, num_workers: int = 0,
                 dtype: torch.dtype = torch.float32) -> None:
        if data is None or not hasattr(data, "__len__"):
            raise ValueError("training/validation data must be a Dataset or an (x, y) tuple of "
                             f"tensors, got {type(data).__name__}")
        self.data = data
        self.device = device
        self.num_workers = num_workers
        self.dtype = dtype  # the model's: inputs follow it
        self.tensors = as_tensors(data)
        if self.tensors is not None:
            x, y = self.tensors
            x = x.to(dtype) if x.is_floating_point() else x
            y = _check_labels(y)
            if device.type != "cpu" and x.element_size() * x.nelement() <= _GPU_RESIDENT_BYTES:
                x, y = x.to(device), y.to(device)
            self.tensors = (x, y)
        if len(self) == 0:
            raise ValueError("the training/validation data is empty")

    def __len__(self) -> int:
        return len(self.tensors[0]) if self.tensors is not None else len(self.data)

    def describe(self) -> dict[str, Any]:
        """Name, split and size of the data, for the run config."""
        info = getattr(self.data, "info", None)
        return {"name": getattr(info, "name", None), "split": getattr(self.data, "split", None),
                "size": len(self)}

    def iterate(self, batches: list[Tensor], seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)`` on the device for each index batch, in order. ``seed`` seeds the
        DataLoader's own generator (its workers' seeds), so the global RNG is not drawn from."""
        if self.tensors is not None:
            x, y = self.tensors
            for index in batches:
                index = index.to(x.device)
                yield (x[index].to(self.device, non_blocking=True),
                       y[index].to(self.device, non_blocking=True))
            return
        loader = DataLoader(self.data, batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed))
        for x, y in loader:
            yield (x.to(self.device, self.dtype, non_blocking=True),
                   _check_labels(y).to(self.device, non_blocking=True))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  context: DistContext) -> list[Tensor]:
    """This rank's index batches for 0-based ``epoch``; ``batch_size`` is per rank."""
    sampler: DistributedSampler[int] = DistributedSampler(
        cast(Any, range(n)), num_replicas=context.world_size, rank=context.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    indices = torch.tensor(list(sampler), dtype=torch.int64)  # (ceil(n / W),)
    return list(indices.split(batch_size))


def steps_per_epoch(n: int, batch_size: int, context: DistContext) -> int:
    """Optimiser steps per epoch (the same on every rank)."""
    per_rank = -(-n // context.world_size)
    return -(-per_rank // batch_size)


def shard_batches(n: int, batch_size: int, context: DistContext) -> list[Tensor]:
    """This rank's share of an ordered pass over ``n`` samples (for validation): no padding,
    so the sums over ranks count every sample exactly once."""
    return list(torch.arange(context.rank, n, context.world_size).split(batch_size))
