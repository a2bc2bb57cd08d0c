"""Loading a model in any form: the front door of :mod:`advlab.models.user` and
:mod:`advlab.models.io` (a run directory or a saved advlab model, a factory ``file.py:Name`` or
``package.module:Name`` with weights, TorchScript, a ``torch.export`` archive).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.models.io import factory_spec, load_model
from advlab.models.normalize import Normalize
from advlab.models.recipe import load_program, recipe_of, wrap_recipe
from advlab.models.user import (
    _error,
    _split_factory,
    build_from_factory,
    load_state,
    read_state_dict,
    sniff_model_file,
)

logger = logging.getLogger(__name__)

__all__ = ["load_any_model"]


def _load_file_model(path: Path, kind: str, weights: Path | None) -> nn.Module:
    if kind in ("json", "safetensors", "directory"):
        if kind == "safetensors" and not path.with_suffix(".json").exists():
            raise _error(f"{path} holds weights but no architecture: give the factory as MODEL "
                         f"(file.py:Name or package.module:Name) and --weights {path}")
        return load_model(path)
    if weights is not None:
        raise ValueError(f"--weights is for a factory MODEL; {path} is a {kind} file with its "
                         "own weights")
    if kind in ("torchscript", "export"):  # the recipe keeps the program for save_model
        recipe = {"name": path.stem, "program": str(path.resolve()), "program_kind": kind}
        return wrap_recipe(load_program(path, kind), recipe)
    if kind in ("torch-save", "pickle"):
        raise _error(f"{path} is a torch.save (pickle) file, which advlab never unpickles as a "
                     "model. Give the architecture as MODEL (file.py:Name) and this file as "
                     "--weights (a state dict, read with weights_only=True), or save the model "
                     "with torch.jit.save / torch.export.save")
    raise _error(f"{path}: not a model advlab knows (a run directory, an advlab model, a "
                 "TorchScript file, a torch.export .pt2 archive, or a factory file.py:Name)")


def _normalized(model: nn.Module, normalize: list[list[float]], spec: str) -> nn.Module:
    """``Sequential(Normalize(mean, std), model)``, its recipe recording ``input_normalize``."""
    recipe = recipe_of(model)
    if recipe is not None and recipe.get("input_normalize"):
        mean, std = recipe["input_normalize"]
        raise ValueError(f"{spec} already normalises its inputs (mean {mean}, std {std}, "
                         "recorded with it): drop --mean/--std")
    wrapped = nn.Sequential(Normalize(*normalize), model)
    if recipe is not None:  # so that save_model (and a training run) can rebuild it
        wrapped.advlab_factory = {**recipe, "input_normalize": normalize}  # type: ignore[assignment]
    return wrapped


def load_any_model(spec: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
                   model_args: dict[str, Any] | None = None, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, imports: Sequence[str] = (),
                   device: str | torch.device = "cpu") -> nn.Module:
    """Any model form as an ``nn.Module`` in eval mode on ``device`` (see the module docstring).

    ``imports`` are modules imported first (so their ``@register_model`` builders exist).
    The model gets ``advlab_source`` (how it was loaded, for records) and ``advlab_metadata``.
    """
    from advlab._utils import resolve_device

    for module in imports:
        importlib.import_module(module)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.exists():
        kind = sniff_model_file(path)
        model = _load_file_model(path, kind, Path(weights) if weights is not None else None)
        source: dict[str, Any] = {"kind": "advlab" if kind in ("json", "safetensors", "directory") else kind,
                  "path": str(path.resolve())}
    elif _split_factory(text) is not None:
        model = build_from_factory(text, model_args)
        if weights is None:
            logger.warning("factory %s without --weights: the model has its initial (random) "
                           "weights", text)
        else:
            load_state(model, read_state_dict(Path(weights)), Path(weights))
        model = wrap_recipe(model, factory_spec(text, model_args))
        source = {"kind": "factory", "factory": text, "model_args": model_args or {},
                  "weights": str(Path(weights).resolve()) if weights is not None else None}
    else:
        raise FileNotFoundError(f"model {text!r} does not exist: give a run directory, a saved "
                                "model, a TorchScript or .pt2 file, or a factory file.py:Name / "
                                "package.module:Name")
    if (mean is None) != (std is None):
        raise ValueError("give both --mean and --std (per channel), or neither")
    metadata = getattr(model, "advlab_metadata", {}) or {}
    if mean is not None and std is not None:
        source["normalize"] = [list(map(float, mean)), list(map(float, std))]
        model = _normalized(model, source["normalize"], text)
    model = model.to(resolve_device(device)).eval()
    model.advlab_source = source  # type: ignore[assignment]
    model.advlab_metadata = metadata  # type: ignore[assignment]
    return model
