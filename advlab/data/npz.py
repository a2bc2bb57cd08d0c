"""User data from a ``.npz`` file (read with ``allow_pickle=False``: arrays only, no code).

The file holds ``x`` and ``y`` and optionally ``x_test`` and ``y_test``:

* ``split="train"`` / ``"val"``: ``x``/``y`` (the validation split is carved off as usual);
* ``split="test"``: ``x_test``/``y_test`` when present, otherwise ``x``/``y`` -- a file with
  a single set is the set you evaluate on (e.g. the ``adv.npz`` written by ``advlab attack``).

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
    make_dataset,
    source_name,
)
from advlab.data.registry import register_dataset


def _as_inputs(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``x`` as float32 in [0, 1] with shape (N, D) or (N, C, H, W)."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DatasetFormatError(
                f"{path}: {key!r} must be finite and in [0, 1] (found {np.nanmin(x)}..{np.nanmax(x)}); "
                "rescale it first, or store uint8 pixels 0..255"
            )
    else:
        raise DatasetFormatError(
            f"{path}: {key!r} has dtype {x.dtype}; store uint8 (0..255) or float in [0, 1]"
        )
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
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
             path: str | os.PathLike[str] | None = None, num_classes: int | None = None) -> Dataset:
    """Arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``) from a ``.npz`` file."""
    file = _resolve_path(data_dir, path)
    arrays = _read(file)
    if "x" not in arrays or "y" not in arrays:
        raise DatasetFormatError(f"{file}: needs arrays 'x' and 'y', found {sorted(arrays)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetFormatError(f"{file}: 'x_test' and 'y_test' must come together")
    x_key, y_key = ("x_test", "y_test") if split == "test" and "x_test" in arrays else ("x", "y")
    x = _as_inputs(arrays[x_key], file, x_key)
    y = _as_labels(arrays[y_key], len(x), file, y_key)
    label_sets = [arrays["y"], arrays.get("y_test", np.zeros(0, np.int64))]
    found = max((int(labels.max()) + 1 for labels in label_sets if labels.size), default=1)
    if num_classes is None:
        num_classes = found
    elif num_classes < found:
        raise ValueError(f"num_classes={num_classes} but {file} has labels up to {found - 1}")
    train_x = x if x_key == "x" else _as_inputs(arrays["x"], file, "x")
    if train_x.shape[1:] != x.shape[1:]:
        raise DatasetFormatError(f"{file}: 'x' and 'x_test' have different sample shapes")
    mean, std = channel_stats(train_x) if len(train_x) else ((0.0,), (1.0,))
    info = DatasetInfo(name="npz", num_classes=int(num_classes), input_shape=tuple(x.shape[1:]),
                       class_names=tuple(str(i) for i in range(int(num_classes))),
                       mean=mean, std=std, source=source_name(file))
    return make_dataset(x, y, info, split)
