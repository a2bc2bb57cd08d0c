"""Models: a timm-style registry, the zoo, input normalisation and safe save/load.

    model = create_model("small_cnn", num_classes=10, input_shape=(1, 28, 28),
                         normalize=((0.2860,), (0.3530,)), seed=0)
    save_model(model, "runs/x", dataset="fashion-mnist", metrics={"accuracy": 0.91})
    model = load_model("runs/x")          # eval mode; safetensors + JSON, never pickle

Any other model (your own code, TorchScript, ``torch.export``): :func:`load_any_model`;
``save_model(model, path, factory="file.py:Name", model_args={...})`` saves any module.

Zoo: ``mlp``, ``small_cnn``, ``lenet``, ``preact_resnet18``, ``random_relu``.
"""

from __future__ import annotations

# Importing the zoo modules registers their builders in MODELS.
from advlab.models import resnet, zoo  # noqa: F401
from advlab.models.anymodel import load_any_model
from advlab.models.io import ModelFileError, ModelNotFoundError, load_model, save_model
from advlab.models.normalize import Normalize
from advlab.models.registry import (
    MODELS,
    create_model,
    model_names,
    model_summary,
    register_model,
)
from advlab.models.user import LogitsAdapter

__all__ = [
    "MODELS",
    "LogitsAdapter",
    "ModelFileError",
    "ModelNotFoundError",
    "Normalize",
    "create_model",
    "load_any_model",
    "load_model",
    "model_names",
    "model_summary",
    "register_model",
    "save_model",
]
