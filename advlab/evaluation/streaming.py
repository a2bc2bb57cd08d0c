"""Points as a stream of fixed-size batches: tensors, a ``Dataset`` or a ``DataLoader`` of any
size, read batch by batch so that memory stays bounded by the batch size, not the data size.

Batch ``b`` holds the global points ``[b * batch_size, (b + 1) * batch_size)`` in the order of the
data, whatever the loader's own batch size: the global batches (and so the per-batch seeds of
:mod:`advlab.evaluation.sharding`) do not depend on how the data is loaded or on the world size.

Tensors, a map-style ``Dataset`` and a ``DataLoader`` that reads a map-style dataset in order can
be read batch by batch by index (:func:`indexed_batches`): a rank then reads (indexes and
collates) only the global batches it evaluates. Anything else (an ``IterableDataset``, a custom
or shuffling sampler) is a stream: it can only be iterated from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class Batch:
    """One global batch: ``x`` ``(B, ...)``, ``y`` ``(B,)`` int64, its index and first point."""

    index: int
    start: int
    x: Tensor
    y: Tensor


def _tensor(value: Any) -> Any:
    return torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value


def as_labels(y: Any) -> Tensor:
    """``y`` as int64 class indices, from a tensor, a numpy array or a list."""
    try:
        y = torch.as_tensor(_tensor(y))
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"labels must be a tensor or numpy array of class indices, got "
                        f"{type(y).__name__}") from err
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype} (one-hot: y.argmax(1))")
    return y.long()


def in_memory(data: Any, y: Any = None) -> tuple[Tensor, Tensor] | None:
    """``(x, y)`` when the data already are tensors (no copy), else None (a stream)."""
    data = _tensor(data)
    if isinstance(data, Tensor):
        if y is None:
            raise ValueError("evaluate(model, x, y, threat): y (a (N,) label tensor) is missing")
        return data, as_labels(y)
    if isinstance(getattr(data, "x", None), Tensor) and isinstance(getattr(data, "y", None), Tensor):
        return data.x, as_labels(data.y)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(_tensor(data[0]), Tensor):
        return _tensor(data[0]), as_labels(data[1])
    if isinstance(getattr(data, "tensors", None), tuple) and len(data.tensors) == 2:
        return data.tensors[0], as_labels(data.tensors[1])
    return None


def total_points(data: Any, y: Any = None, n: int | None = None) -> int | None:
    """The number of points that will be evaluated, when known without reading the data."""
    pair = in_memory(data, y)
    if pair is not None:
        total = len(pair[0])
    else:
        dataset = getattr(data, "dataset", data)
        try:
            total = len(dataset)
        except TypeError:
            return n
    return total if n is None else min(total, n)


def _raw_batches(data: Any) -> Iterator[tuple[Any, Any]]:
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(data, TorchDataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=256)
    if not isinstance(data, (Iterable, DataLoader)):
        raise TypeError(f"data must be (x, y) tensors, a Dataset or a DataLoader, got {type(data).__name__}")
    for item in data:
        yield _pair(item)


def _pair(item: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of one loader batch (a tuple or list that starts with x, y)."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError("every batch of the DataLoader must be (x, y) (or start with x, y), "
                        f"got {type(item).__name__}")
    return _tensor(item[0]), as_labels(item[1])


@dataclass
class Indexed:
    """Global batches read by index: ``count`` batches; ``read(indices)`` yields the batches
    ``indices`` in that order and reads only their points. ``shared``: the points are tensors
    already in memory in every process (reading a batch is slicing it)."""

    count: int
    read: Callable[[Sequence[int]], Iterator[Batch]]
    shared: bool


def _loader_settings(loader: Any) -> dict[str, Any] | None:
    """The settings of a ``DataLoader`` that reads a map-style dataset in order, in batches, all
    points kept (what the indexed reader re-uses); None for any other loader (a stream)."""
    from torch.utils.data import BatchSampler, IterableDataset, SequentialSampler

    if (isinstance(loader.dataset, IterableDataset) or not isinstance(loader.sampler, SequentialSampler)
            or type(loader.batch_sampler) is not BatchSampler or loader.batch_sampler.drop_last):
        return None
    settings = dict(collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                    pin_memory=loader.pin_memory, timeout=loader.timeout,
                    worker_init_fn=loader.worker_init_fn,
                    multiprocessing_context=loader.multiprocessing_context)
    if loader.num_workers > 0:
        settings["prefetch_factor"] = loader.prefetch_factor
    return settings


def _dataset_reader(dataset: Any, settings: dict[str, Any], batch_size: int,
                    stop: int) -> Callable[[Sequence[int]], Iterator[Batch]]:
    from torch.utils.data import DataLoader

    def read(indices: Sequence[int]) -> Iterator[Batch]:
        spans = [list(range(i * batch_size, min((i + 1) * batch_size, stop))) for i in indices]
        if not spans:
            return
        loader = DataLoader(dataset, batch_sampler=spans, **settings)
        for index, item in zip(indices, loader, strict=True):
            x, y = _pair(item)
            yield Batch(index, index * batch_size, x, y)

    return read


def indexed_batches(data: Any, y: Any = None, *, batch_size: int,
                    n: int | None = None) -> Indexed | None:
    """The global batches of ``data`` by index (tensors, a map-style ``Dataset``, a ``DataLoader``
    reading one in order, at most ``n`` points); None for a stream that can only be iterated."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = n if n is not None else float("inf")
    pair = in_memory(data, y)
    if pair is not None:
        x, labels = pair
        stop = int(min(len(x), limit))

        def sliced(indices: Sequence[int]) -> Iterator[Batch]:
            for i in indices:
                start = i * batch_size
                yield Batch(i, start, x[start:min(start + batch_size, stop)],
                            labels[start:min(start + batch_size, stop)])

        return Indexed(-(-stop // batch_size), sliced, shared=True)
    if isinstance(data, DataLoader):
        dataset, settings = data.dataset, _loader_settings(data)
    elif isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        dataset, settings = data, dict(collate_fn=default_collate)
    else:
        return None
    try:
        stop = int(min(len(dataset), limit))
    except TypeError:  # a map-style dataset without a length: a stream
        return None
    if settings is None:
        return None
    return Indexed(-(-stop // batch_size), _dataset_reader(dataset, settings, batch_size, stop),
                   shared=False)


def shuffled(data: Any) -> bool:
    """Whether ``data`` is a ``DataLoader`` with a random sampler (each pass, another order)."""
    from torch.utils.data import DataLoader, RandomSampler

    return isinstance(data, DataLoader) and isinstance(data.sampler, RandomSampler)


def iter_batches(data: Any, y: Any = None, *, batch_size: int,
                 n: int | None = None) -> Iterator[Batch]:
    """Global batches of ``batch_size`` points (the last may be shorter), at most ``n`` points.

    Tensors are sliced (views), a map-style dataset is read batch by batch
    (:func:`indexed_batches`); a stream is re-chunked with a buffer of at most one loader batch
    plus ``batch_size`` points.
    """
    source = indexed_batches(data, y, batch_size=batch_size, n=n)
    if source is not None:
        yield from source.read(range(source.count))
        return
    limit = n if n is not None else float("inf")
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    held = seen = index = 0
    for bx, by in _raw_batches(data):
        if seen >= limit:
            break
        take = int(min(len(bx), limit - seen))
        xs.append(bx[:take])
        ys.append(by[:take])
        held += take
        seen += take
        while held >= batch_size:
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            yield Batch(index, index * batch_size, x_all[:batch_size].clone(), y_all[:batch_size].clone())
            index += 1
            xs, ys = [x_all[batch_size:]], [y_all[batch_size:]]
            held -= batch_size
    if held:
        yield Batch(index, index * batch_size, torch.cat(xs), torch.cat(ys))
