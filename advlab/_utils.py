"""Small shared helpers: device resolution, atomic file writes, name normalisation, unwrapping."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a ``torch.device`` for ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"``.

    ``"auto"`` (or ``None``) picks CUDA when it is available and the CPU otherwise.
    Asking for CUDA on a machine without it is a clear error.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} requested but CUDA is not available on this machine; "
            "use --device cpu or --device auto"
        )
    return dev


def canonical_name(name: str) -> str:
    """Registry key for a user-supplied name: lower case, ``-`` and spaces become ``_``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile``
    wrappers (nested ones too), or ``model`` itself."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while True:
        inner = model.module if isinstance(model, wrappers) else getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):  # _orig_mod: a torch.compile wrapper
            return model
        model = inner


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write a file atomically: ``writer(fh)`` fills a temporary file in the same directory,
    which is flushed, fsync'ed and renamed over ``path``; the directory is fsync'ed too.
    A crash leaves either the old file or the new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as pretty JSON (non-finite floats become ``null``)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=True)
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def _json_safe(obj: Any) -> Any:
    """Convert tensors, numpy values, paths and non-finite floats into JSON-friendly values."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


json_safe = _json_safe
