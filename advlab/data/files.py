"""Your data from a file or a folder, recognised by content: ``load_dataset("file", path=...)``.

* ``.npz`` (arrays, ``allow_pickle=False``), ``.pt`` (a dict of tensors read with
  ``torch.load(weights_only=True)``: no objects are unpickled) or ``.safetensors``, holding
  ``x_train``/``y_train`` (or ``x``/``y``) and optionally ``x_test``/``y_test``: see
  :mod:`advlab.data.npz` for shapes, ranges and the seeded held-out test split of a file with a
  single set;
* an image folder ``root/<class>/*.png|jpg|jpeg|bmp|gif`` (Pillow), or ``root/train/<class>/``
  and ``root/test/<class>/``; classes are the sorted sub-folder names; ``image_size`` resizes
  (required when the images differ in size); greyscale images give 1 channel, others 3.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from advlab.data.base import Dataset, DatasetFormatError, DatasetNotFoundError, replace_info
from advlab.data.npz import _read as read_npz
from advlab.data.npz import arrays_dataset
from advlab.data.registry import register_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def file_kind(path: Path) -> str:
    """``"images"``, ``"npz"``, ``"torch"``, ``"safetensors"`` or ``"unknown"``, by content."""
    if path.is_dir():
        return "images"
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        return "npz" if any(n.endswith(".npy") for n in names) else "torch"
    return "torch" if head[:1] == b"\x80" else "unknown"


def _tensor_arrays(path: Path, kind: str) -> dict[str, np.ndarray]:
    import torch

    if kind == "safetensors":
        from safetensors.torch import load_file

        tensors: Any = load_file(str(path))
    else:
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, truncation, ...
            raise DatasetFormatError(f"{path}: not a plain dict of tensors ({str(err)[:200]}); "
                                     "save {'x': x, 'y': y} with torch.save or safetensors") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise DatasetFormatError(f"{path}: needs a dict of tensors such as {{'x': x, 'y': y}}, "
                                 f"found a {type(tensors).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetFormatError(f"{root}: an image folder needs one sub-folder per class "
                                 "(root/<class>/*.png)")
    return folders


def _read_images(root: Path, classes: list[str], image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images: list[tuple[Path, Any]] = []
    labels: list[int] = []
    modes: set[str] = set()
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        for file in files:
            with Image.open(file) as img:
                modes.add("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                images.append((file, img.copy()))
            labels.append(label)
    if not images:
        raise DatasetFormatError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    mode = "L" if modes == {"L"} else "RGB"
    sizes = {img.size for _, img in images}
    if image_size is None and len(sizes) > 1:
        raise DatasetFormatError(f"{root}: the images have {len(sizes)} different sizes (e.g. "
                                 f"{sorted(sizes)[:3]}); pass --image-size N (image_size=N) to resize")
    arrays = []
    for _, img in images:
        img = img.convert(mode)
        if image_size is not None and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(arrays), np.asarray(labels, dtype=np.int64)


def _image_arrays(root: Path, image_size: int | None) -> tuple[dict[str, np.ndarray], list[str]]:
    has_split = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if has_split else root
    classes = [p.name for p in _class_folders(base)]
    x, y = _read_images(base, classes, image_size)
    arrays = {"x": x, "y": y}
    if has_split:
        arrays["x_test"], arrays["y_test"] = _read_images(root / "test", classes, image_size)
    return arrays, classes


@register_dataset("file", status="user data: --data PATH (npz, .pt, .safetensors, image folder)")
def load_file(split: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
              path: str | os.PathLike[str] | None = None, num_classes: int | None = None,
              test_fraction: float = 0.2, split_seed: int = 0,
              image_size: int | None = None) -> Dataset:
    """One split of the data at ``path`` (see the module docstring)."""
    chosen = path if path is not None else data_dir
    if chosen is None:
        raise ValueError("dataset 'file' needs a path: load_dataset('file', path='data.npz') "
                         "or --data PATH")
    file = Path(chosen).expanduser()
    if not file.exists():
        raise DatasetNotFoundError(f"data {file} does not exist")
    kind = file_kind(file)
    classes = None
    if kind == "images":
        arrays, classes = _image_arrays(file, image_size)
    elif kind == "npz":
        arrays = read_npz(file)
    elif kind in ("torch", "safetensors"):
        arrays = _tensor_arrays(file, kind)
    else:
        raise DatasetFormatError(f"{file}: not data advlab reads (an .npz, a .pt or .safetensors "
                                 "dict of tensors with x and y, or an image folder)")
    data = arrays_dataset(arrays, file, split, name="file", num_classes=num_classes,
                          test_fraction=test_fraction, split_seed=split_seed)
    if classes is not None and len(classes) >= data.info.num_classes:
        data = replace_info(data, num_classes=len(classes), class_names=tuple(classes))
    return data
