"""Dataset registry and :func:`load_dataset`, the one entry point to every dataset.

Each registered loader returns a whole raw split (``"train"`` or ``"test"``); this module
carves the validation split off the training set and draws seeded subsets, the same way for
every dataset, so ``train`` and ``val`` with the same seed are disjoint and together cover the
training set.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from advlab._checks import check_int
from advlab.data.base import SPLITS, Dataset, validate
from advlab.registry import Registry

F = TypeVar("F", bound=Callable[..., Dataset])
StatusFn = Callable[[Any], str]

#: display name (e.g. ``"fashion-mnist"``) -> loader ``fn(split, *, data_dir, seed, **options)``,
#: with its ``status`` function (``status(data_dir) -> str``) as metadata.
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
_COMMON = ("split", "data_dir", "seed")


def register_dataset(name: str, status: str | StatusFn = "generated", *,
                     replace: bool = False) -> Callable[[F], F]:
    """Decorator adding a loader to :data:`DATASETS`. ``status`` is a fixed string for
    :func:`dataset_status` or a function ``status(data_dir) -> str``."""
    return DATASETS.register(name, replace=replace,
                             status=status if callable(status) else _fixed_status(status))


def _fixed_status(text: str) -> StatusFn:
    def status(_data_dir: Any) -> str:
        return text

    return status


def dataset_names() -> list[str]:
    """Registered dataset names (any of them also accepted with ``_`` for ``-``, any case)."""
    return DATASETS.names()


def resolve_name(name: str) -> str:
    """The registered name matching ``name``; ValueError listing the valid names otherwise."""
    return DATASETS.resolve(name)


def dataset_status(data_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """name -> "found at DIR" / "missing: how to get it" / "generated" / "bundled with scikit-learn"."""
    return {name: DATASETS.metadata(name)["status"](data_dir) for name in dataset_names()}


def _check_options(name: str, loader: Callable[..., Dataset], options: dict[str, Any]) -> None:
    accepted = [p for p in inspect.signature(loader).parameters if p not in _COMMON]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"dataset {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no options'}"
        )


def _resolve_fraction(split: str, val_fraction: float | None) -> float:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if val_fraction is None:
        return 0.1 if split == "val" else 0.0
    fraction = float(val_fraction)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if split == "val" and fraction == 0.0:
        raise ValueError("split='val' needs val_fraction > 0 (the default is 0.1)")
    return fraction


def _rng(seed: int, purpose: int) -> np.random.Generator:
    """An independent numpy stream for (seed, purpose); the global RNG is never touched."""
    return np.random.default_rng(np.random.SeedSequence([seed, purpose]))


def val_indices(n_total: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_index, val_index), disjoint, sorted, covering ``range(n_total)``; val has
    ``round(val_fraction * n_total)`` samples drawn with ``seed``."""
    n_val = int(round(val_fraction * n_total))
    if not 0 < n_val < n_total:
        raise ValueError(
            f"val_fraction={val_fraction} of {n_total} training samples leaves an empty "
            "train or val split; choose another fraction"
        )
    perm = _rng(seed, 1).permutation(n_total)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    n: int | None = None,
    **options: Any,
) -> Dataset:
    """Load one split of a registered dataset as tensors in memory.

    Args:
        name: a name from :func:`dataset_names` (``-``/``_`` and case do not matter).
        split: ``"train"``, ``"val"`` (carved off the training set) or ``"test"``.
        data_dir: where the files are (see each dataset; ``$ADVLAB_DATA`` is also searched).
        val_fraction: share of the training set held out as validation; ``None`` means 0.1 for
            ``split="val"`` and 0 (whole training set) for ``split="train"``. With the same
            ``seed`` and fraction, "train" is exactly the training set minus "val".
        seed: seeds the validation carve-out, the subset ``n`` and generated datasets.
        n: keep a seeded random subset of this many samples (original order preserved).
        **options: dataset-specific options (e.g. ``n_samples``, ``noise`` for ``spirals``).

    Returns:
        :class:`Dataset` with x (N, C, H, W) or (N, D) float32 in [0, 1] and y (N,) int64.
    """
    key = resolve_name(name)
    seed = check_int("seed", int(seed) if isinstance(seed, np.integer) else seed, minimum=0)
    fraction = _resolve_fraction(split, val_fraction)
    loader = DATASETS[key]
    _check_options(key, loader, options)
    raw_split = "test" if split == "test" else "train"
    dataset = loader(raw_split, data_dir=data_dir, seed=seed, **options)
    if split != "test" and fraction > 0:
        train_index, val_index = val_indices(len(dataset), fraction, seed)
        dataset = dataset.subset(val_index if split == "val" else train_index)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= len(dataset):
            raise ValueError(f"n must be an int in 1..{len(dataset)} for {key} {split}, got {n!r}")
        keep = np.sort(_rng(seed, 2).permutation(len(dataset))[: int(n)])
        dataset = dataset.subset(keep)
    return validate(replace(dataset, split=split))
