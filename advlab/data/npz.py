"""User data from a ``.npz`` file (read with ``allow_pickle=False``: arrays only, no code).

The file holds ``x_train``/``y_train`` and ``x_test``/``y_test`` (or ``x``/``y`` for the
training set), or only ``x``/``y``:

* with a test set: ``split="train"`` / ``"val"`` read the training set (validation carved off as
  usual), ``split="test"`` the test set;
* with only ``x``/``y``: a seeded held-out test split (``test_fraction``, default 0.2, drawn
  with ``split_seed``, default 0, independent of the training seed) is set aside; ``train`` and
  ``val`` never see it and ``test`` is exactly it (``info.test_split`` says so). With
  ``test_fraction=0`` the ``test`` split is the whole file (to evaluate a set you did not
  train on, e.g. the ``adv.npz`` written by ``advlab attack``).

``x`` is uint8 (scaled by 1/255) or float in [0, 1], of shape (N, D), (N, C, H, W), or
(N, H, W) (a channel axis is added); ``y`` holds integers >= 0. ``num_classes`` is
``max(y) + 1`` over both sets unless given as an option.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from advlab.data.base import (
    Dataset,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    channel_stats,
    check_finite,
    make_dataset,
    source_name,
)
from advlab.data.registry import register_dataset


def _as_inputs(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``x`` as float32 in [0, 1] with shape (N, D) or (N, C, H, W)."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind == "f":
        check_finite(x, f"{path}: {key!r}")
        x = x.astype(np.float32)
        if x.size and not (x.min() >= 0 and x.max() <= 1):
            raise DatasetFormatError(
                f"{path}: {key!r} must lie in [0, 1] (found {x.min()}..{x.max()}); "
                "rescale it first, or store uint8 pixels 0..255"
            )
    else:
        raise DatasetFormatError(
            f"{path}: {key!r} has dtype {x.dtype}; store uint8 (0..255) or float in [0, 1]"
        )
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise DatasetFormatError(
            f"{path}: {key!r} has shape {x.shape}, which looks channels-last (N, H, W, C); "
            f"advlab takes channels-first (N, C, H, W): save x.transpose(0, 3, 1, 2) instead"
        )
    if x.ndim not in (2, 4):
        raise DatasetFormatError(
            f"{path}: {key!r} has shape {x.shape}; expected (N, D), (N, H, W) or (N, C, H, W)"
        )
    return np.ascontiguousarray(x)


def _as_labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise DatasetFormatError(
            f"{path}: {key!r} must be {n} integer labels of shape ({n},), found "
            f"dtype {y.dtype} shape {y.shape}"
        )
    if n and y.min() < 0:
        raise DatasetFormatError(f"{path}: {key!r} has negative labels")
    return y.astype(np.int64)


def _read(path: Path) -> dict[str, np.ndarray]:
    errors = (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays 'x' and 'y'")
        with archive:
            return {key: archive[key] for key in archive.files}
    except errors as err:
        raise DatasetFormatError(
            f"{path}: not a readable .npz of plain arrays ({err}); object arrays are refused"
        ) from err


def _resolve_path(data_dir: str | os.PathLike[str] | None, path: str | os.PathLike[str] | None) -> Path:
    chosen = path if path is not None else data_dir
    if chosen is None:
        raise ValueError("dataset 'npz' needs a file: load_dataset('npz', path='data.npz')")
    file = Path(chosen).expanduser()
    if not file.is_file():
        raise DatasetNotFoundError(f"npz dataset file {file} does not exist (or is a directory)")
    return file


@register_dataset("npz", status="user file: load_dataset('npz', path='file.npz')")
def load_npz(split: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
             path: str | os.PathLike[str] | None = None, num_classes: int | None = None,
             test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Arrays ``x_train``/``y_train`` (or ``x``/``y``) and ``x_test``/``y_test`` from a ``.npz``."""
    file = _resolve_path(data_dir, path)
    return arrays_dataset(_read(file), file, split, name="npz", num_classes=num_classes,
                          test_fraction=test_fraction, split_seed=split_seed)


def _train_keys(arrays: dict[str, np.ndarray], file: Path) -> tuple[str, str]:
    for x_key, y_key in (("x_train", "y_train"), ("x", "y")):
        if x_key in arrays and y_key in arrays:
            return x_key, y_key
    raise DatasetFormatError(f"{file}: needs arrays 'x' and 'y' (or 'x_train', 'y_train'), "
                             f"found {sorted(arrays)}")


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_index, test_index), sorted and disjoint: ``round(fraction * n)`` test points
    drawn with ``seed`` (a stream of its own, independent of the validation split's)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {fraction}")
    n_test = int(round(fraction * n))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={fraction} of {n} samples leaves an empty split")
    perm = np.random.default_rng(np.random.SeedSequence([seed, 3])).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def arrays_dataset(arrays: dict[str, np.ndarray], file: Path, split: str, *, name: str,
                   num_classes: int | None = None, test_fraction: float = 0.2,
                   split_seed: int = 0) -> Dataset:
    """One split of named arrays (npz, .pt, .safetensors): see the module docstring."""
    x_key, y_key = _train_keys(arrays, file)
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetFormatError(f"{file}: 'x_test' and 'y_test' must come together")
    given = "x_test" in arrays
    keys = ("x_test", "y_test") if split == "test" and given else (x_key, y_key)
    x = _as_inputs(arrays[keys[0]], file, keys[0])
    y = _as_labels(arrays[keys[1]], len(x), file, keys[1])
    label_sets = [arrays[y_key], arrays.get("y_test", np.zeros(0, np.int64))]
    found = max((int(labels.max()) + 1 for labels in label_sets if labels.size), default=1)
    if num_classes is None:
        num_classes = found
    elif num_classes < found:
        raise ValueError(f"num_classes={num_classes} but {file} has labels up to {found - 1}")
    train_x = x if keys[0] == x_key else _as_inputs(arrays[x_key], file, x_key)
    if train_x.shape[1:] != x.shape[1:]:
        raise DatasetFormatError(f"{file}: {x_key!r} and 'x_test' have different sample shapes")
    test_split = "given"
    if not given and test_fraction > 0:
        train_index, test_index = holdout_indices(len(train_x), test_fraction, split_seed)
        index = test_index if split == "test" else train_index
        train_x = train_x[train_index]
        x, y = x[index], y[index]
        test_split = (f"held-out {test_fraction:.0%} of the file ({len(test_index)} points, "
                      f"split_seed {split_seed}), never trained on")
    elif not given:
        test_split = "the whole file (test_fraction=0): not a held-out split"
    mean, std = channel_stats(train_x) if len(train_x) else ((0.0,), (1.0,))
    info = DatasetInfo(name=name, num_classes=int(num_classes), input_shape=tuple(x.shape[1:]),
                       class_names=tuple(str(i) for i in range(int(num_classes))),
                       mean=mean, std=std, source=source_name(file), test_split=test_split)
    return make_dataset(x, y, info, split)
