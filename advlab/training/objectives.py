"""Training objectives: the per-batch loss that :func:`advlab.training.fit` minimises.

An objective is ``objective(model, x, y) -> loss`` or ``-> (loss, logits)`` where ``x`` is a
batch ``(B, C, H, W)`` in [0, 1], ``y`` its labels ``(B,)`` and ``loss`` a scalar; the logits
``(B, num_classes)``, when returned, give the training accuracy. Robust training (FGSM-mix of
Goodfellow et al. 2015, PGD-AT of Madry et al. 2018, TRADES of Zhang et al. 2019, ...) plugs in
here and nowhere else: there is one training loop.

Under data-parallel training the ``model`` given to the objective is the
``DistributedDataParallel`` wrapper, so the loss's gradients are averaged across processes.
An inner attack may use it too, or :func:`unwrap_model` to run on the bare module (cheaper: no
reducer book-keeping); the final loss must come from ``model`` itself.

:data:`OBJECTIVES` maps names to *factories*: ``OBJECTIVES[name](**params) -> objective``.
Later defenses register here with :func:`register_objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._utils import canonical_name

Objective = Callable[[nn.Module, Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]
ObjectiveFactory = Callable[..., Objective]

OBJECTIVES: dict[str, ObjectiveFactory] = {}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or ``model``)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def register_objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Decorator: register an objective factory under ``name`` (``-`` and ``_`` are equivalent)."""

    def decorator(factory: ObjectiveFactory) -> ObjectiveFactory:
        key = canonical_name(name)
        if key in OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        OBJECTIVES[key] = factory
        return factory

    return decorator


@dataclass(frozen=True)
class NamedObjective:
    """An objective built by :func:`get_objective`, remembering its name and parameters so the
    run config can record them."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    function: Objective = field(default=None, repr=False)  # type: ignore[assignment]

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.function(model, x, y)


def get_objective(name: str, **params: Any) -> NamedObjective:
    """Build the objective called ``name`` (e.g. ``"none"``) with keyword ``params``."""
    key = canonical_name(name)
    if key not in OBJECTIVES:
        known = ", ".join(sorted(n.replace("_", "-") for n in OBJECTIVES))
        raise ValueError(f"unknown objective (defense) {name!r}; choose one of: {known}")
    return NamedObjective(name=key.replace("_", "-"), params=dict(params),
                          function=OBJECTIVES[key](**params))


def describe_objective(objective: Objective) -> dict[str, Any]:
    """``{"name", "params"}`` of an objective, for the run config."""
    if isinstance(objective, NamedObjective):
        return {"name": objective.name, "params": dict(objective.params)}
    name = getattr(objective, "__qualname__", None) or type(objective).__qualname__
    return {"name": f"{getattr(objective, '__module__', '?')}.{name}", "params": {}}


def standard_objective(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy on the clean batch; returns ``(loss, logits)`` with logits ``(B, K)``."""
    logits = model(x)  # (B, K)
    return F.cross_entropy(logits, y), logits


@register_objective("none")
def _none(**params: Any) -> Objective:
    """Standard (non-robust) training: :func:`standard_objective`."""
    if params:
        raise ValueError(f"objective 'none' takes no parameters, got {sorted(params)}")
    return standard_objective


def split_objective_output(output: Tensor | tuple[Tensor, Tensor], y: Tensor) -> tuple[Tensor, Tensor | None]:
    """Check an objective's output: a scalar loss and optional logits ``(B, K)`` for ``y``."""
    loss, logits = output if isinstance(output, tuple) else (output, None)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError("the objective must return a scalar loss tensor (or (loss, logits)); "
                         f"got {type(loss).__name__} of shape {getattr(loss, 'shape', None)}")
    if logits is not None and (logits.ndim != 2 or logits.shape[0] != y.shape[0]):
        raise ValueError(f"the objective returned logits of shape {tuple(logits.shape)} for "
                         f"{y.shape[0]} labels; return (loss, logits) with logits (B, num_classes)")
    return loss, logits
