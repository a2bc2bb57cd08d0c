"""Recipes of models whose code is the user's: how :func:`advlab.save_model` stores them and
:func:`advlab.load_model` rebuilds them.

A recipe is the ``spec`` of a model's JSON file. Besides the model registry's own spec
(``name``, ``num_classes``, ``input_shape``, ...), it can be

* ``{"name", "factory", "model_args"}``: a class or function ``path/to/file.py:Name`` or
  ``package.module:Name`` called with ``model_args`` (a ``.py`` file's code runs);
* ``{"name", "program", "program_kind", "program_sha256"}``: a TorchScript file
  (``program_kind`` ``"torchscript"``) or a ``torch.export`` archive (``"export"``), kept next
  to the JSON as ``architecture.pt`` / ``architecture.pt2``; the weights in the safetensors file
  replace the program's own;

and any of them may carry ``"input_normalize": [mean, std]``: the model is then
``Sequential(Normalize(mean, std), model)`` (inputs in [0, 1] for a model trained on normalised
ones). The weights file holds the inner model's tensors only; the wrappers
(:class:`~advlab.models.user.LogitsAdapter`, ``Normalize``) are rebuilt from the recipe. A model
carries its recipe as ``advlab_factory`` (a dict), so saving it again needs no arguments.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.models.normalize import Normalize
from advlab.models.user import ExportedModule, LogitsAdapter, ModelFileError

__all__ = ["load_program", "save_program", "strip_wrappers", "wrap_recipe"]

#: the file name of the program copy in a saved model's directory, per program kind
PROGRAM_NAMES = {"torchscript": "architecture.pt", "export": "architecture.pt2"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_program(path: Path, kind: str) -> nn.Module:
    """The module of a TorchScript file or of a ``torch.export`` archive (on the CPU)."""
    if kind == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    if kind == "export":
        return torch.export.load(str(path)).module()
    raise ModelFileError(f"{path}: unknown program kind {kind!r} (torchscript or export)")


def program_path(spec: dict[str, Any], base: Path) -> Path:
    """Where the program of ``spec`` is (relative names are next to the JSON, in ``base``),
    checked against its recorded sha256."""
    path = Path(str(spec["program"]))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ModelFileError(f"{base}: the model's program {path.name} is missing (a TorchScript "
                             "or torch.export model keeps a copy of it next to its JSON)")
    expected = spec.get("program_sha256")
    if isinstance(expected, str) and _sha256(path) != expected:
        raise ModelFileError(f"{path}: sha256 checksum mismatch with the model's JSON; the "
                             "program file was modified after saving")
    return path


def save_program(spec: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Copy the program of ``spec`` into ``directory``; the spec naming that copy."""
    source = Path(str(spec["program"]))
    kind = str(spec.get("program_kind"))
    if kind not in PROGRAM_NAMES:
        raise ValueError(f"program_kind must be one of {sorted(PROGRAM_NAMES)}, got {kind!r}")
    target = directory / PROGRAM_NAMES[kind]
    if not source.is_file():
        raise FileNotFoundError(f"cannot save the model: its program {source} no longer exists")
    sha = _sha256(source)
    if not (target.is_file() and _sha256(target) == sha):
        temporary = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, temporary)
        temporary.replace(target)
    return {**spec, "program": target.name, "program_sha256": sha}


def strip_wrappers(model: nn.Module, recipe: dict[str, Any]) -> nn.Module:
    """The inner model of a wrapped one (without Normalize and the logits adapter), whose
    state dict is what gets saved."""
    if recipe.get("input_normalize") and isinstance(model, nn.Sequential) and len(model) == 2 \
            and isinstance(model[0], Normalize):
        model = model[1]
    if ("factory" in recipe or "program" in recipe) and isinstance(model, LogitsAdapter):
        model = model.model
    return model


def wrap_recipe(inner: nn.Module, recipe: dict[str, Any]) -> nn.Module:
    """The model of ``recipe`` around its (loaded) inner model, carrying the recipe as
    ``advlab_factory``."""
    model = inner
    if recipe.get("program_kind") == "export":
        model = ExportedModule(inner)
    elif "factory" in recipe or "program" in recipe:
        model = LogitsAdapter(inner)
    normalize = recipe.get("input_normalize")
    if normalize:
        mean, std = normalize
        model = nn.Sequential(Normalize(mean, std), model)
    model.advlab_factory = dict(recipe)  # type: ignore[assignment]
    return model


def recipe_of(model: nn.Module) -> dict[str, Any] | None:
    """The recipe a model carries: ``advlab_factory``, else the registry's ``advlab_spec``."""
    recipe = getattr(model, "advlab_factory", None)
    if isinstance(recipe, dict):
        return dict(recipe)
    spec = getattr(model, "advlab_spec", None)
    return dict(spec) if isinstance(spec, dict) else None
