"""Model registry in the style of timm: ``@register_model(name)`` and :func:`create_model`.

A builder is ``fn(num_classes, input_shape, **kwargs) -> nn.Module``. :func:`create_model`
adds the input normalisation, seeds the initialisation without touching the global RNG, and
attaches ``model.advlab_spec`` -- the JSON-serialisable recipe that :func:`load_model` uses
to rebuild the architecture before loading the weights.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from advlab._checks import check_int
from advlab._utils import canonical_name, json_safe, unwrap
from advlab.models.normalize import Normalize
from advlab.registry import Registry

F = TypeVar("F", bound=Callable[..., nn.Module])

#: name -> builder ``fn(num_classes, input_shape, **kwargs) -> nn.Module``.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, *, replace: bool = False, **meta: Any) -> Callable[[F], F]:
    """Decorator adding a model builder to :data:`MODELS` under ``name`` (with metadata)."""
    return MODELS.register(name, replace=replace, **meta)


def model_names() -> list[str]:
    """Registered model names (``-`` and ``_`` are interchangeable when creating)."""
    return MODELS.names()


def _builder(name: str) -> tuple[str, Callable[..., nn.Module]]:
    builder = MODELS.get(name)
    return canonical_name(name), builder


def _check_kwargs(key: str, builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("num_classes", "input_shape")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {key!r} does not take argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no options'}"
        )
    try:
        json.dumps(json_safe(kwargs), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"model arguments must be JSON-serialisable to be saved: {err}") from err


def _check_shape(num_classes: int, input_shape: Sequence[int]) -> tuple[int, ...]:
    check_int("num_classes", num_classes)
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be positive ints such as (1, 28, 28), got {input_shape!r}")
    return shape


def create_model(
    name: str,
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 28, 28),
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model for inputs of shape ``input_shape`` (without the batch axis).

    Args:
        name: one of :func:`model_names` (``small-cnn`` == ``small_cnn``).
        num_classes: number of outputs (``random_relu`` also allows 1: a scalar network).
        input_shape: e.g. ``(1, 28, 28)``, ``(3, 32, 32)`` or ``(2,)``.
        normalize: ``(mean, std)``; the model becomes ``Sequential(Normalize(mean, std), net)``
            and takes inputs in [0, 1].
        seed: makes the initialisation reproducible; the global RNG state is left untouched.
        **kwargs: builder options (e.g. ``widths=(512, 512)`` for ``mlp``).

    Returns:
        The model (train mode, CPU) with ``model.advlab_spec`` attached.
    """
    key, builder = _builder(name)
    _check_kwargs(key, builder, kwargs)
    shape = _check_shape(num_classes, input_shape)
    norm = None
    if normalize is not None:
        mean, std = normalize
        norm = [[float(v) for v in mean], [float(v) for v in std]]
        if len(norm[0]) not in (1, shape[0]):
            raise ValueError(
                f"normalize has {len(norm[0])} means but the input has {shape[0]} channels"
            )
    if seed is None:
        net = builder(num_classes, shape, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):  # restores the CPU RNG state afterwards
            torch.random.default_generator.manual_seed(int(seed))
            net = builder(num_classes, shape, **kwargs)
    model = nn.Sequential(Normalize(*norm), net) if norm is not None else net
    model.advlab_spec = {  # type: ignore[assignment]
        "name": key,
        "num_classes": num_classes,
        "input_shape": list(shape),
        "normalize": norm,
        "kwargs": json_safe(kwargs),
    }
    return model


__all__ = ["MODELS", "create_model", "model_names", "model_summary", "register_model", "unwrap"]


def model_summary(model: nn.Module) -> dict[str, Any]:
    """Name, parameter counts, spec and metadata of a model, for ``advlab info``."""
    model = unwrap(model)
    spec = getattr(model, "advlab_spec", None)
    params = list(model.parameters())
    return {
        "name": spec["name"] if spec else type(model).__name__,
        "num_parameters": sum(p.numel() for p in params),
        "num_trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "spec": spec,
        "metadata": getattr(model, "advlab_metadata", None),
    }
