"""Training objectives: the per-batch loss that :func:`advlab.training.fit` minimises.

An objective is ``objective(model, x, y) -> loss | (loss, logits) | ObjectiveOutput`` where
``x`` is a batch ``(B, C, H, W)`` in [0, 1], ``y`` its labels ``(B,)`` and ``loss`` a scalar;
the clean logits ``(B, num_classes)``, when returned, give the training accuracy and the
adversarial logits of :class:`ObjectiveOutput` the adversarial training accuracy. Robust training
(FGSM-mix of Goodfellow et al. 2015, PGD-AT of Madry et al. 2018, TRADES of Zhang et al. 2019,
...; see :mod:`advlab.training.defenses`) plugs in here and nowhere else: there is one loop.

Under data-parallel training the ``model`` given to the objective is the
``DistributedDataParallel`` wrapper, so the loss's gradients are averaged across processes.
An inner attack may use it too, or :func:`unwrap_model` to run on the bare module (cheaper: no
reducer book-keeping); the final loss must come from ``model`` itself.

Stateful objectives (random starts, schedules, adaptive weights) may also define the optional
hooks below; ``fit`` calls them when present (:func:`objective_hook`):

* ``bind(context: ObjectiveContext)``: before training -- seed the objective's own
  ``torch.Generator`` from ``(seed, rank)``, learn the number of steps, reset the state;
* ``state_dict() -> dict`` / ``load_state_dict(state)``: saved in every checkpoint (per rank),
  so a resumed run repeats the uninterrupted one exactly;
* ``epoch_end(model, record) -> EpochReport``: after each epoch, with the epoch's metrics; it
  may add metrics and report a collapse (catastrophic overfitting), after which the loop rolls
  back to the previous epoch and calls ``after_rollback(count) -> str | None`` (a description of
  the remedy, or ``None`` to stop). Objectives that may collapse set ``watches_collapse = True``.

:data:`OBJECTIVES` maps names to *factories*: ``OBJECTIVES[name](**params) -> objective``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._utils import canonical_name

ObjectiveFactory = Callable[..., Any]

OBJECTIVES: dict[str, ObjectiveFactory] = {}


@dataclass
class ObjectiveOutput:
    """What an objective returns for one batch.

    Attributes:
        loss: scalar to minimise.
        logits: ``(B, K)`` logits of the clean batch (training accuracy), or ``None``.
        adv_logits: ``(B, K)`` logits of the perturbed batch the loss was computed on
            (adversarial training accuracy), or ``None``.
    """

    loss: Tensor
    logits: Tensor | None = None
    adv_logits: Tensor | None = None


Objective = Callable[[nn.Module, Tensor, Tensor], Tensor | tuple[Tensor, Tensor] | ObjectiveOutput]


@dataclass(frozen=True)
class ObjectiveContext:
    """What ``fit`` tells an objective's ``bind`` hook before training."""

    seed: int
    rank: int
    world_size: int
    device: torch.device
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return max(self.steps_per_epoch * self.epochs, 1)


@dataclass
class EpochReport:
    """An objective's ``epoch_end`` answer: metrics for the epoch record and, when the run
    collapsed (e.g. catastrophic overfitting), a sentence saying what was observed."""

    metrics: dict[str, Any] = field(default_factory=dict)
    collapse: str | None = None


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
    run config can record them. The optional hooks are those of ``function``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    function: Objective = field(default=None, repr=False)  # type: ignore[assignment]

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Any:
        return self.function(model, x, y)


def objective_hook(objective: Objective, name: str) -> Callable[..., Any] | None:
    """The optional hook ``name`` (``bind``, ``state_dict``, ``epoch_end``, ...) of an
    objective, looking through :class:`NamedObjective`; ``None`` when it has none."""
    target = objective.function if isinstance(objective, NamedObjective) else objective
    hook = getattr(target, name, None)
    return hook if callable(hook) else None


def watches_collapse(objective: Objective) -> bool:
    """True when the objective may report a collapse (the loop then keeps a rollback state)."""
    target = objective.function if isinstance(objective, NamedObjective) else objective
    return bool(getattr(target, "watches_collapse", False))


def _accepted(factory: ObjectiveFactory) -> list[str]:
    return [p.name for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def get_objective(name: str, **params: Any) -> NamedObjective:
    """Build the objective (defense) called ``name`` (e.g. ``"pgd-at"``) with keyword ``params``."""
    key = canonical_name(name)
    if key not in OBJECTIVES:
        known = ", ".join(sorted(n.replace("_", "-") for n in OBJECTIVES))
        raise ValueError(f"unknown objective (defense) {name!r}; choose one of: {known}")
    factory = OBJECTIVES[key]
    display = key.replace("_", "-")
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


@register_objective("none")
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


# The defenses register themselves on import; importing them here keeps the registry complete
# wherever it is used.
from advlab.training import defenses as _defenses  # noqa: E402,F401
