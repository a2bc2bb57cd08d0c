"""Datasets that need no files: scikit-learn's 8x8 digits and generated 2-D toy problems.

* ``digits``: the UCI optical digits bundled with scikit-learn (Alpaydin & Kaynak 1998),
  1797 images 8x8 with values 0..16, rescaled to [0, 1]; a fixed seeded split of 1397 train /
  400 test (the same split as the test fixtures), independent of ``seed``.
* ``spirals``: two interleaved spirals, the classic lecture example (Lang & Witbrock 1988).
* ``moons``: scikit-learn's ``make_moons``.

Both 2-D sets are mapped into [0, 1]^2 by a fixed affine map with the same scale on both axes,
so distances (and therefore eps) keep their meaning; ``seed`` selects the draw, and the test
split is drawn from an independent stream of the same seed.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from advlab._checks import check_int, check_number
from advlab.data.base import Dataset, DatasetInfo, channel_stats, make_dataset
from advlab.data.registry import register_dataset

DIGITS_TRAIN = 1397  # of 1797; the remaining 400 are the test split
SPIRAL_TURNS = 780.0 / 360.0  # each arm turns 2 1/6 times, as in the classic example
_TRAIN_STREAM, _TEST_STREAM = 0, 1


def _sequence(seed: int, split: str) -> np.random.SeedSequence:
    """The independent stream of ``split`` for the dataset seed ``seed``."""
    return np.random.SeedSequence([seed, 100 + (_TRAIN_STREAM if split == "train" else _TEST_STREAM)])


def _generator(seed: int, split: str) -> torch.Generator:
    state = int(_sequence(seed, split).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(state >> 1)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """x (1797, 1, 8, 8) float32 in [0, 1] and y (1797,) int64, read once (read-only)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


@register_dataset("digits", status="bundled with scikit-learn")
def load_digits(split: str, *, data_dir: str | os.PathLike[str] | None = None,
                seed: int = 0) -> Dataset:
    """scikit-learn digits: x (N, 1, 8, 8) in [0, 1]; 1397 train / 400 test, fixed split."""
    x, y = _digits_arrays()
    # torch.randperm with seed 0, exactly as tests/conftest.py, so both agree on the split.
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).numpy()
    train, test = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    mean, std = channel_stats(x[train])
    info = DatasetInfo(name="digits", num_classes=10, input_shape=(1, 8, 8),
                       class_names=tuple(str(i) for i in range(10)), mean=mean, std=std,
                       source="scikit-learn")
    index = train if split == "train" else test
    return make_dataset(x[index], y[index], info, split)


def _check(n_samples: int, noise: float, label_noise: float = 0.0) -> None:
    check_int("n_samples", int(n_samples) if isinstance(n_samples, np.integer) else n_samples,
              minimum=2)
    check_number("noise", noise, allow_zero=True)
    if not 0 <= label_noise <= 1:
        raise ValueError(f"label_noise must lie in [0, 1], got {label_noise!r}")


def _flip_labels(y: np.ndarray, fraction: float, *,
                 generator: torch.Generator | None = None) -> np.ndarray:
    """Flip exactly ``round(fraction * N)`` binary labels chosen at random."""
    flip = torch.randperm(len(y), generator=generator)[: int(round(fraction * len(y)))].numpy()
    y = y.copy()
    y[flip] = 1 - y[flip]
    return y


def _toy_dataset(name: str, x: np.ndarray, y: np.ndarray, split: str,
                 class_names: tuple[str, str]) -> Dataset:
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    mean, std = channel_stats(x)
    info = DatasetInfo(name=name, num_classes=2, input_shape=(2,), class_names=class_names,
                       mean=mean, std=std, source="generated")
    return make_dataset(x, y, info, split)


def make_spirals(n_samples: int, noise: float, *,
                 generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in [0, 1]^2: x (n, 2) float64, y (n,) int64 in shuffled order.

    Arm 0 is ``t (-cos t, sin t)`` with ``t = sqrt(u) * 2 pi * 780/360``, u ~ U(0, 1), arm 1 is
    its mirror image ``-arm0``; both are scaled into [0.05, 0.95]^2 and jittered by Gaussian
    noise of standard deviation ``noise`` (in [0, 1] units). ``generator`` draws everything.
    """
    n_first = (n_samples + 1) // 2
    y = np.repeat(np.array([0, 1], dtype=np.int64), [n_first, n_samples - n_first])
    t_max = 2 * np.pi * SPIRAL_TURNS
    u = torch.rand(n_samples, generator=generator, dtype=torch.float64).numpy()
    t = np.sqrt(u) * t_max
    sign = np.where(y == 0, 1.0, -1.0)
    points = sign[:, None] * np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1)  # (n, 2)
    jitter = torch.randn(n_samples, 2, generator=generator, dtype=torch.float64).numpy() * noise
    x = 0.5 + 0.45 * points / t_max + jitter
    order = torch.randperm(n_samples, generator=generator).numpy()
    return x[order], y[order]


@register_dataset("spirals")
def load_spirals(split: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 n_samples: int = 1000, noise: float = 0.01,
                 label_noise: float = 0.0) -> Dataset:
    """Two interleaved spirals: x (n_samples, 2) in [0, 1], classes 0/1 balanced.

    ``noise``: std of the coordinate jitter in [0, 1] units (arms are about 0.05 apart).
    ``label_noise``: fraction of training labels flipped (the test split stays clean).
    """
    _check(n_samples, noise, label_noise)
    generator = _generator(seed, split)
    x, y = make_spirals(int(n_samples), float(noise), generator=generator)
    if split == "train" and label_noise > 0:
        y = _flip_labels(y, float(label_noise), generator=generator)
    return _toy_dataset("spirals", x, y, split, ("arm 0", "arm 1"))


@register_dataset("moons")
def load_moons(split: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
               n_samples: int = 1000, noise: float = 0.1) -> Dataset:
    """Two interleaving half circles (``sklearn.datasets.make_moons``), x (n_samples, 2).

    ``noise`` is scikit-learn's (std before rescaling); the moons, spanning [-1, 2] x
    [-0.5, 1], are scaled by 1/4 into [0.125, 0.875] x [0.3125, 0.6875] and clipped to [0, 1].
    """
    from sklearn.datasets import make_moons

    _check(n_samples, noise)
    random_state = int(np.random.default_rng(_sequence(seed, split)).integers(2**31 - 1))
    x, y = make_moons(n_samples=int(n_samples), noise=float(noise) or None,
                      random_state=random_state)
    x = (x - np.array([0.5, 0.25])) / 4.0 + 0.5
    return _toy_dataset("moons", x, y.astype(np.int64), split, ("moon 0", "moon 1"))
