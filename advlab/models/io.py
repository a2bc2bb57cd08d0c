"""Save and load models as ``<name>.safetensors`` (tensors only) + ``<name>.json`` (recipe).

Loading never unpickles anything: the JSON spec rebuilds the architecture through the model
registry (or, for a model whose code is the user's, through its recipe: a factory, or a copy of
its TorchScript / ``torch.export`` program, see :mod:`advlab.models.recipe`), and the weights
are read with ``safetensors`` (a flat header plus raw tensor bytes), after checking the file's
sha256 against the one recorded in the JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from advlab._utils import atomic_write, atomic_write_json, json_safe, resolve_device
from advlab.models.recipe import (
    load_program,
    program_path,
    save_program,
    strip_wrappers,
    wrap_recipe,
)
from advlab.models.registry import create_model, unwrap
from advlab.models.user import ModelFileError

FORMAT = "advlab-model"
FORMAT_VERSION = 1


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """The model directory or one of its two files does not exist."""


def _check_name(name: str) -> None:
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"model file name must be a plain name such as 'model', got {name!r}")


def factory_spec(factory: str, model_args: dict[str, Any] | None) -> dict[str, Any]:
    """The spec of a model built by a factory ``file.py:Name`` / ``package.module:Name``."""
    from advlab.models.user import _split_factory

    parts = _split_factory(factory)
    if parts is None:
        raise ValueError(f"factory must read path/to/file.py:Name or package.module:Name, got {factory!r}")
    where, attr = parts
    if where.endswith(".py"):  # an absolute path, so the JSON works from any directory
        factory = f"{Path(where).expanduser().resolve()}:{attr}"
    args = json_safe(dict(model_args or {}))
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"model_args must be JSON-serialisable: {err}") from err
    return {"name": attr, "factory": factory, "model_args": args}


def save_model(model: nn.Module, path: str | os.PathLike[str], *, name: str = "model",
               factory: str | None = None, model_args: dict[str, Any] | None = None,
               **metadata: Any) -> Path:
    """Write ``<path>/<name>.safetensors`` and ``<path>/<name>.json`` atomically.

    The JSON holds the model's recipe -- its ``advlab_spec`` (models of
    :func:`~advlab.models.create_model`) or, for any other module, the ``factory``
    (``"path/to/file.py:Name"`` or ``"package.module:Name"``, called with ``model_args``) --
    so :func:`load_model` can rebuild it, the advlab version, the sha256 of the weights file
    and ``metadata`` (dataset, training config, metrics, ...; JSON-serialisable).
    Loading a model saved with a ``.py`` factory runs that file. Returns the directory ``path``.
    """
    from advlab import __version__
    from advlab.models.user import LogitsAdapter

    _check_name(name)
    model = unwrap(model)
    spec: dict[str, Any] | None
    if factory is not None:
        model = model.model if type(model) is LogitsAdapter else model
        spec = factory_spec(factory, model_args)
    elif isinstance(getattr(model, "advlab_factory", None), dict):  # the user's code, a program
        spec = dict(model.advlab_factory)
        model = strip_wrappers(model, spec)
    else:
        spec = getattr(model, "advlab_spec", None)
    if spec is None:
        raise ValueError(
            f"cannot save a {type(model).__name__} without a recipe: build it with "
            "advlab.create_model(...), or name the code that builds it: "
            f"save_model(model, path, factory='path/to/file.py:{type(model).__name__}', "
            "model_args={...})"
        )
    safe_metadata = json_safe(metadata)
    try:
        json.dumps(safe_metadata, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save_model metadata must be JSON-serialisable: {err}") from err
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"save_model needs a directory, but {directory} is a file")
    if "program" in spec:  # TorchScript / torch.export: a copy of the program goes alongside
        directory.mkdir(parents=True, exist_ok=True)
        spec = save_program(spec, directory)
    # clone: contiguous, on the CPU, and no two entries sharing storage (safetensors refuses that)
    tensors = {key: value.detach().to("cpu").contiguous().clone()
               for key, value in model.state_dict().items()}
    blob = safetensors_save(tensors, metadata={"format": "pt", "advlab": FORMAT})
    weights_name = f"{name}.safetensors"
    atomic_write(directory / weights_name, lambda fh: fh.write(blob))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "advlab_version": __version__,
        "spec": spec,
        "weights": weights_name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "metadata": safe_metadata,
    }
    atomic_write_json(directory / f"{name}.json", document)
    return directory


def _locate(path: Path, name: str) -> Path:
    """The JSON file for ``path`` (a directory, a .json or a .safetensors file)."""
    if path.is_dir():
        json_path = path / f"{name}.json"
    elif path.suffix in (".json", ".safetensors"):
        json_path = path.with_suffix(".json")
    elif path.exists():
        raise ModelFileError(f"{path}: expected a model directory, a .json or a .safetensors file")
    else:
        raise ModelNotFoundError(f"no model at {path}: the path does not exist")
    if not json_path.is_file():
        raise ModelNotFoundError(
            f"{json_path} not found: a model is a <name>.json (architecture) next to a "
            "<name>.safetensors (weights), as written by advlab.save_model"
        )
    return json_path


def _read_document(json_path: Path) -> dict[str, Any]:
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{json_path}: not a JSON file ({err})") from err
    if not isinstance(document, dict):
        document = {"format": None}
    spec = document.get("spec")
    if document.get("format", FORMAT) != FORMAT or not isinstance(spec, dict) or not (
            {"name", "num_classes", "input_shape"} <= set(spec) or "factory" in spec
            or "program" in spec):
        raise ModelFileError(f"{json_path}: not an advlab model description (no valid 'spec')")
    if not isinstance(document.get("sha256"), str):
        raise ModelFileError(f"{json_path}: no 'sha256' of the weights; re-save with save_model")
    weights = document.get("weights", json_path.with_suffix(".safetensors").name)
    if not isinstance(weights, str) or Path(weights).name != weights:
        raise ModelFileError(f"{json_path}: 'weights' must be a file name next to it, got {weights!r}")
    return document


def _read_weights(weights_path: Path, sha256: str) -> dict[str, Tensor]:
    try:
        blob = weights_path.read_bytes()
    except FileNotFoundError as err:
        raise ModelNotFoundError(f"weights file {weights_path} not found") from err
    try:
        tensors = safetensors_load(blob)
    except Exception as err:  # safetensors raises its own SafetensorError and others
        hint = ""
        if blob[:2] == b"PK" or blob[:1] == b"\x80":
            hint = " It looks like a torch.save / pickle file, which advlab refuses to load."
        raise ModelFileError(f"{weights_path}: not a safetensors file ({err}).{hint}") from err
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ModelFileError(
            f"{weights_path}: sha256 checksum mismatch with its JSON; the weights file was "
            "modified or corrupted after saving"
        )
    return tensors


def _rebuild(spec: dict[str, Any], json_path: Path) -> nn.Module:
    if "factory" in spec:  # the user's code (a .py factory runs that file)
        from advlab.models.user import build_from_factory

        return build_from_factory(str(spec["factory"]), spec.get("model_args") or {},
                                  base=json_path.parent)
    if "program" in spec:  # TorchScript or torch.export, copied next to the JSON
        return load_program(program_path(spec, json_path.parent), str(spec.get("program_kind")))
    normalize = spec.get("normalize")
    try:
        return create_model(
            str(spec["name"]), int(spec["num_classes"]), tuple(spec["input_shape"]),
            normalize=tuple(normalize) if normalize else None, seed=0, **spec.get("kwargs", {}),
        )
    except (ValueError, TypeError, KeyError) as err:
        hint = ""
        if "unknown model" in str(err):
            hint = (" -- a model registered with @register_model in your code must be imported "
                    "first: `--import your_package.models` on the command line, `import "
                    "your_package.models` in Python, or save it with factory=")
        raise ModelFileError(
            f"{json_path}: cannot rebuild architecture {spec.get('name')!r}: {err}{hint}"
        ) from err


def _load_weights(model: nn.Module, tensors: dict[str, Tensor], weights_path: Path) -> None:
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ModelFileError(
            f"{weights_path} does not match the architecture in its JSON: missing keys "
            f"{missing[:5]}, unexpected keys {unexpected[:5]}, shape mismatches {wrong[:5]}"
        )
    float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(float_dtypes) == 1:  # e.g. a model saved in float64 stays float64
        model.to(float_dtypes.pop())
    model.load_state_dict(tensors, strict=True)


def load_model(path: str | os.PathLike[str], *, name: str = "model",
               device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`save_model`, in eval mode on ``device``.

    ``path`` is the directory or its ``.json`` / ``.safetensors`` file. The returned model
    carries ``advlab_spec`` and ``advlab_metadata`` (the metadata dict given to save_model).
    Raises ModelFileError (ModelNotFoundError when missing) with the offending file's name.
    """
    _check_name(name)
    json_path = _locate(Path(path), name)
    document = _read_document(json_path)
    weights_path = json_path.parent / document.get("weights", json_path.with_suffix(".safetensors").name)
    tensors = _read_weights(weights_path, document["sha256"])
    model = _rebuild(document["spec"], json_path)
    _load_weights(model, tensors, weights_path)
    spec = document["spec"]
    if {"factory", "program", "input_normalize"} & set(spec):
        if "program" in spec:  # absolute, so that saving the model again copies it
            spec = {**spec, "program": str(program_path(spec, json_path.parent).resolve())}
        model = wrap_recipe(model, spec)
    model.to(resolve_device(device)).eval()
    model.advlab_metadata = document.get("metadata") or {}  # type: ignore[assignment]
    return model
