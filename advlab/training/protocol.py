"""The protocol between :func:`advlab.training.fit` and its objectives, and their registry.

An objective is ``objective(model, x, y) -> loss | (loss, logits) | ObjectiveOutput`` where
``x`` is a batch ``(B, C, H, W)`` in [0, 1], ``y`` its labels ``(B,)`` and ``loss`` a scalar;
the clean logits ``(B, num_classes)``, when returned, give the training accuracy and the
adversarial logits of :class:`ObjectiveOutput` the adversarial training accuracy.

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
  back to the previous epoch (:mod:`advlab.training.rollback`) and calls
  ``after_rollback(count) -> str | None`` (a description of the remedy, or ``None`` to stop).
  Objectives that may collapse set ``watches_collapse = True``.

:data:`OBJECTIVES` maps names to *factories*: ``OBJECTIVES[name](**params) -> objective``, with
a one-line ``description`` as metadata. This module imports nothing from the defenses, which
import it to register themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import unwrap
from advlab.registry import Registry

ObjectiveFactory = Callable[..., Any]

#: name -> objective factory, with metadata ``description`` (one line, for ``advlab info``).
OBJECTIVES: Registry[ObjectiveFactory] = Registry("objective (defense)")

#: The bare module inside a DDP / DataParallel / torch.compile wrapper (alias of ``unwrap``).
unwrap_model = unwrap


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


def _first_line(factory: ObjectiveFactory) -> str:
    doc = (getattr(factory, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def register_objective(name: str, *, description: str | None = None, replace: bool = False,
                       **meta: Any) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Decorator: register an objective factory under ``name`` (``-`` and ``_`` are
    equivalent) with a one-line ``description`` (default: the first docstring line)."""

    def decorator(factory: ObjectiveFactory) -> ObjectiveFactory:
        text = description if description is not None else _first_line(factory)
        return OBJECTIVES.add(name, factory, replace=replace, description=text, **meta)

    return decorator


@dataclass(frozen=True)
class NamedObjective:
    """An objective built by :func:`~advlab.training.objectives.get_objective`, remembering its
    name and parameters so the run config can record them. The optional hooks are those of
    ``function``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    function: Objective = field(default=None, repr=False)  # type: ignore[assignment]

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Any:
        return self.function(model, x, y)


def _target(objective: Objective) -> Any:
    return objective.function if isinstance(objective, NamedObjective) else objective


def objective_hook(objective: Objective, name: str) -> Callable[..., Any] | None:
    """The optional hook ``name`` (``bind``, ``state_dict``, ``epoch_end``, ...) of an
    objective, looking through :class:`NamedObjective`; ``None`` when it has none."""
    hook = getattr(_target(objective), name, None)
    return hook if callable(hook) else None


def watches_collapse(objective: Objective) -> bool:
    """True when the objective may report a collapse (fit then installs a rollback callback)."""
    return bool(getattr(_target(objective), "watches_collapse", False))


def objective_state(objective: Objective) -> dict[str, Any] | None:
    """The objective's ``state_dict()``, or None for stateless objectives."""
    hook = objective_hook(objective, "state_dict")
    return hook() if hook is not None else None


def load_objective_state(objective: Objective, states: list[Any] | None, rank: int,
                         world_size: int) -> None:
    """Load this rank's saved objective state (rank 0's when the number of processes changed)."""
    hook = objective_hook(objective, "load_state_dict")
    if hook is not None and states and states[0] is not None:
        hook(states[rank] if len(states) == world_size else states[0])


def objective_epoch_end(objective: Objective, model: nn.Module,
                        record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The objective's end-of-epoch metrics and collapse description (None: no collapse)."""
    hook = objective_hook(objective, "epoch_end")
    if hook is None:
        return {}, None
    report = hook(model, dict(record))
    return dict(report.metrics), report.collapse
