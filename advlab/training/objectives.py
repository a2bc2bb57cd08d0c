"""Training objectives: the per-batch loss that :func:`advlab.training.fit` minimises.

Robust training (FGSM-mix of Goodfellow et al. 2015, PGD-AT of Madry et al. 2018, TRADES of
Zhang et al. 2019, ...; see :mod:`advlab.training.defenses`) plugs in here and nowhere else:
there is one loop. The protocol (:class:`ObjectiveOutput`, :class:`ObjectiveContext`,
:class:`EpochReport`, the hooks) and the registry :data:`OBJECTIVES` live in
:mod:`advlab.training.protocol`; this module re-exports them, builds objectives by name
(:func:`get_objective`) and checks what they return.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Importing the defenses registers them in OBJECTIVES (they import only the protocol).
import advlab.training.defenses  # noqa: F401
from advlab.training.protocol import (
    OBJECTIVES,
    EpochReport,
    NamedObjective,
    Objective,
    ObjectiveContext,
    ObjectiveFactory,
    ObjectiveOutput,
    objective_hook,
    register_objective,
    unwrap_model,
    watches_collapse,
)

__all__ = ["OBJECTIVES", "EpochReport", "NamedObjective", "Objective", "ObjectiveContext",
           "ObjectiveFactory", "ObjectiveOutput", "describe_objective", "get_objective",
           "objective_hook", "register_objective", "split_objective_output",
           "standard_objective", "unwrap_model", "watches_collapse"]


def _accepted(factory: ObjectiveFactory) -> list[str]:
    return [p.name for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def get_objective(name: str, **params: Any) -> NamedObjective:
    """Build the objective (defense) called ``name`` (e.g. ``"pgd-at"``) with keyword ``params``."""
    factory = OBJECTIVES.get(name)
    display = OBJECTIVES.resolve(name)
    accepted = _accepted(factory)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        what = f"takes the parameters {', '.join(accepted)}" if accepted else "takes no parameters"
        raise ValueError(f"objective {display!r} {what}; got {', '.join(unknown)}")
    return NamedObjective(name=display, params=dict(params), function=factory(**params))


def describe_objective(objective: Objective) -> dict[str, Any]:
    """``{"name", "params"}`` of an objective for the run config, plus ``settings`` (every
    parameter with its default filled in) for the registered defenses."""
    if isinstance(objective, NamedObjective):
        described: dict[str, Any] = {"name": objective.name, "params": dict(objective.params)}
        settings = getattr(objective.function, "settings", None)
        if isinstance(settings, dict):
            described["settings"] = dict(settings)
        return described
    name = getattr(objective, "__qualname__", None) or type(objective).__qualname__
    return {"name": f"{getattr(objective, '__module__', '?')}.{name}", "params": {}}


def standard_objective(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy on the clean batch; returns ``(loss, logits)`` with logits ``(B, K)``."""
    logits = model(x)  # (B, K)
    return F.cross_entropy(logits, y), logits


@register_objective("none", description="standard training: cross-entropy on the clean batch")
def _none() -> Objective:
    """Standard (non-robust) training: :func:`standard_objective`."""
    return standard_objective


def split_objective_output(output: Any, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Check an objective's output; return ``(loss, clean logits | None, adv logits | None)``."""
    if isinstance(output, ObjectiveOutput):
        loss, logits, adv_logits = output.loss, output.logits, output.adv_logits
    else:
        (loss, logits), adv_logits = (output if isinstance(output, tuple) else (output, None)), None
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError("the objective must return a scalar loss tensor (or (loss, logits)); "
                         f"got {type(loss).__name__} of shape {getattr(loss, 'shape', None)}")
    for name, value in (("logits", logits), ("adv_logits", adv_logits)):
        if value is not None and (value.ndim != 2 or value.shape[0] != y.shape[0]):
            raise ValueError(f"the objective returned {name} of shape {tuple(value.shape)} for "
                             f"{y.shape[0]} labels; return (loss, logits) with logits "
                             "(B, num_classes)")
    return loss, logits, adv_logits
