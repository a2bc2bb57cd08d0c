"""Models whose code is the user's: factories, state dicts, TorchScript, ``torch.export``.

:func:`advlab.models.anymodel.load_any_model` turns one MODEL string into an ``nn.Module`` in eval mode:

* a run directory or a model saved by :func:`advlab.save_model` (directory, .json, .safetensors);
* a factory ``path/to/file.py:Name`` or ``package.module:Name`` -- a class or function returning
  an ``nn.Module``, called with ``model_args`` -- plus ``weights`` (a safetensors file, or a
  state dict read with ``torch.load(weights_only=True)``). A ``.py`` file's code RUNS: that is
  the user's explicit choice;
* a TorchScript file (``torch.jit.save``) or a ``torch.export`` archive (``torch.export.save``).

Files are recognised by their content, not their extension. Weights are never unpickled as
objects. ``mean``/``std`` put :class:`~advlab.models.Normalize` in front. The forward's output
goes through :class:`LogitsAdapter`: a tensor passes, an object or dict with ``logits`` (Hugging
Face style ``ModelOutput``) gives its ``logits``, a tuple its first element.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["LogitsAdapter", "build_from_factory", "import_factory",
           "read_state_dict", "sniff_model_file"]


class ModelFileError(ValueError):
    """A model file is not what it claims to be (not JSON, not safetensors, checksum mismatch,
    missing keys, unknown architecture); the message names the file."""


def _error(message: str) -> Exception:
    return ModelFileError(message)


def sniff_model_file(path: Path) -> str:
    """What ``path`` holds, by content: ``"directory"``, ``"json"``, ``"safetensors"``,
    ``"torchscript"``, ``"export"``, ``"torch-save"`` (a pickle archive), ``"pickle"`` or
    ``"unknown"``."""
    if path.is_dir():
        return "directory"
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:1] == b"{":
        return "json"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    if head[:2] != b"PK":
        return "unknown"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "unknown"
    tails = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "export"
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "torch-save" if "data.pkl" in tails else "unknown"


def _split_factory(ref: str) -> tuple[str, str] | None:
    """``("file.py" | "pkg.mod", "Name")`` for a factory reference, else None."""
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name.isidentifier() or (len(where) == 1 and where.isalpha()):
        return None  # "C:..." is a Windows drive, not a factory
    return where, name


def import_factory(ref: str, *, base: Path | None = None) -> Callable[..., Any]:
    """The object ``Name`` of ``file.py:Name`` (the file is executed) or ``pkg.module:Name``.
    A relative file is looked up from the working directory, then from ``base``."""
    parts = _split_factory(ref)
    if parts is None:
        raise ValueError(f"{ref!r} is not a factory: write path/to/file.py:Name or package.module:Name")
    where, name = parts
    if where.endswith(".py"):
        file = Path(where).expanduser()
        if not file.is_file() and base is not None and (base / file).is_file():
            file = base / file
        if not file.is_file():
            raise FileNotFoundError(f"factory {ref!r}: the file {file} does not exist")
        module_name = f"advlab_user_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        logger.info("running the code of %s (factory %s)", file, ref)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise ValueError(f"factory {ref!r}: cannot import {where!r} ({err}); is it on "
                             "PYTHONPATH? A file is written path/to/file.py:Name") from err
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module))
        raise ValueError(f"factory {ref!r}: {where} has no {name!r} (nn.Module classes there: "
                         f"{', '.join(found) or 'none'})")
    return getattr(module, name)


def build_from_factory(ref: str, model_args: dict[str, Any] | None = None, *,
                       base: Path | None = None) -> nn.Module:
    """Call the factory ``ref`` with ``**model_args``; it must return an ``nn.Module``."""
    factory = import_factory(ref, base=base)
    try:
        model = factory(**(model_args or {}))
    except TypeError as err:
        raise TypeError(f"factory {ref!r} called with model args {model_args or {}}: {err}; "
                        "pass its arguments as JSON with --model-args") from err
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory {ref!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file or of a ``torch.save``'d state dict (``weights_only=True``);
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers (advlab checkpoints too) are opened."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    kind = sniff_model_file(path)
    if kind == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if kind not in ("torch-save", "pickle"):
        raise _error(f"{path}: weights must be a safetensors file or a torch.save'd state dict "
                     f"(found {kind})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _error(f"{path}: not a plain state dict ({first[:200]}). advlab reads weights "
                     "with weights_only=True and never unpickles objects: save "
                     "model.state_dict() (torch.save or safetensors), not the model") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _error(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_state(model: nn.Module, state: dict[str, Tensor], source: Path) -> None:
    """``model.load_state_dict(state)`` strictly, with a message naming what differs."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise _error(f"{source} does not fit the model: missing keys {missing[:5]}, unexpected "
                     f"keys {unexpected[:5]}, shape mismatches {wrong[:5]}; check --model-args")
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    model.load_state_dict(state, strict=True)


def unwrap_logits(output: Any) -> Tensor:
    """The logits tensor of a forward's output (tensor, ``.logits``, ``["logits"]``, tuple)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"the model returned a {type(output).__name__}; advlab needs logits: a "
                    "tensor (N, classes), or an object / dict with 'logits'")


class LogitsAdapter(nn.Module):
    """``model`` whose output is reduced to its logits tensor (:func:`unwrap_logits`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return unwrap_logits(self.model(x))


class ExportedModule(LogitsAdapter):
    """A ``torch.export`` program's module; ``train()``/``eval()`` are not forwarded to it
    (exported graphs refuse them; the graph is already fixed in the mode it was exported in)."""

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self


def describe_source(model: nn.Module) -> str:
    """One line on where ``model`` came from (for logs)."""
    return json.dumps(getattr(model, "advlab_source", {}), sort_keys=True)
