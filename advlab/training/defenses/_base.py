"""Machinery shared by the robust-training objectives of :mod:`advlab.training.defenses`.

* :class:`Defense` -- the base of every defense: a callable objective that owns a
  ``torch.Generator`` (seeded from fit's seed and the rank in :meth:`Defense.bind`), counts its
  optimiser steps (for schedules: eps ramps, CURE's h, ...) and saves both in fit's checkpoints.
* :class:`Crafting` -- how the inner maximisation runs: the threat model (with an optional eps
  ramp), eval mode by default, on the *unwrapped* module with frozen parameters
  (:func:`advlab.attacks._core.model_guard`), so the inner attack neither touches DDP's
  gradient book-keeping nor the weights' ``.grad``.
* :func:`ascend` -- projected steepest ascent of a per-sample loss from a start point, returning
  the last iterate (the inner loop of Madry et al. 2018, Wong et al. 2020, Zhang et al. 2019),
  built from the same pieces as :func:`advlab.attacks.pgd` (``ThreatModel.step`` / ``project``
  and ``_core.input_grad``) minus the input checks and best-iterate forwards that a training
  step does not need. One step from ``x`` is exactly :func:`advlab.attacks.fgsm`.
* :func:`frozen_bn_stats` -- BatchNorm policy: adversarial batches go through the model in train
  mode (batch statistics) but with momentum 0, so the running statistics -- used at test time --
  follow clean data only, unless a defense is built with ``bn_adv_stats=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advlab._checks import check_number
from advlab.attacks._core import input_grad, model_guard
from advlab.threat import ThreatModel, canonical_norm
from advlab.training.protocol import EpochReport, ObjectiveContext, ObjectiveOutput, unwrap_model

LossFn = Callable[[Tensor, Tensor], Tensor]


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module, *, enabled: bool = True) -> Iterator[None]:
    """Forward passes inside keep every BatchNorm's running statistics unchanged.

    Train-mode BatchNorm still normalises with the batch statistics, but with momentum 0 the
    running mean/var stay as they were, and ``num_batches_tracked`` is restored on exit.
    """
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not enabled or not layers:
        yield
        return
    saved = [(m, m.momentum, m.num_batches_tracked) for m in layers]
    counts = [None if count is None else count.clone() for _, _, count in saved]
    try:
        for m in layers:
            m.momentum = 0.0
        yield
    finally:
        for (m, momentum, count), value in zip(saved, counts, strict=True):
            m.momentum = momentum
            if count is not None and value is not None:
                count.copy_(value)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def ascend(model: nn.Module, x: Tensor, target: Any, threat: ThreatModel, loss_fn: LossFn, *,
           steps: int, step_size: float | Tensor, start: Tensor) -> Tensor:
    """``steps`` projected steepest-ascent steps of ``loss_fn(model(x_adv), target)`` from
    ``start``; returns the last iterate ``(B, ...)`` inside the threat model around ``x``.

    Call inside :meth:`Crafting.guard`. ``target``: labels ``(B,)`` or, e.g. for TRADES, clean
    probabilities ``(B, K)`` -- whatever ``loss_fn`` takes.
    """
    x_adv = start.detach()
    for _ in range(steps):
        grad, _, _ = input_grad(model, x_adv, target, loss_fn)  # (B, ...)
        x_adv = threat.project(x, threat.step(x_adv, grad, step_size))
    return x_adv.detach()


@dataclass(frozen=True)
class Crafting:
    """Threat model and mode of a defense's inner maximisation.

    Attributes:
        eps, norm: the training threat model (bounds ``(0, 1)``).
        eps_ramp: fraction of the training steps over which eps grows linearly from 0 to
            ``eps`` (0: full eps from the start); a common warm-up for small-image adversarial
            training, and it keeps early PGD-AT from stalling at chance accuracy.
        train_mode: craft with the model in train mode (default eval mode, as in the reference
            implementations of TRADES and CURE): dropout off, BatchNorm on running statistics.
        bn_adv_stats: let adversarial forward passes update the BatchNorm running statistics.
    """

    eps: float
    norm: str = "linf"
    eps_ramp: float = 0.0
    train_mode: bool = False
    bn_adv_stats: bool = False

    def __post_init__(self) -> None:
        check_number("eps", self.eps)
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        if not 0.0 <= self.eps_ramp <= 1.0:
            raise ValueError(f"eps_ramp is a fraction of training in [0, 1], got {self.eps_ramp}")

    def eps_at(self, progress: float) -> float:
        """The radius after ``progress`` (fraction of training done, in [0, 1])."""
        if self.eps_ramp <= 0.0:
            return self.eps
        return self.eps * min(1.0, max(progress, 0.0) / self.eps_ramp)

    def threat(self, progress: float) -> ThreatModel:
        return ThreatModel(self.norm, self.eps_at(progress), (0.0, 1.0))

    @contextlib.contextmanager
    def guard(self, model: nn.Module) -> Iterator[nn.Module]:
        """The unwrapped module in crafting mode with frozen parameters (restored on exit)."""
        inner = unwrap_model(model)
        with model_guard(inner, train=self.train_mode), \
                frozen_bn_stats(inner, enabled=self.train_mode and not self.bn_adv_stats):
            yield inner

    def forward_adversarial(self, model: nn.Module, x_adv: Tensor) -> Tensor:
        """Logits ``(B, K)`` of ``x_adv`` through the (possibly DDP-wrapped) training model."""
        with frozen_bn_stats(unwrap_model(model), enabled=not self.bn_adv_stats):
            return model(x_adv)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "eps_ramp": self.eps_ramp,
                "craft_train": self.train_mode, "bn_adv_stats": self.bn_adv_stats}


class Defense:
    """Base of the registered defenses: ``defense(model, x, y) -> ObjectiveOutput``.

    Subclasses implement :meth:`loss` and may extend :meth:`extra_state` /
    :meth:`load_extra_state` and :meth:`epoch_report`. ``self.generator`` is the only source of
    randomness; ``self.progress`` is the fraction of training done (for schedules).
    """

    watches_collapse = False

    def __init__(self) -> None:
        self.generator: torch.Generator | None = None
        self.step = 0
        self.total_steps = 1
        self.steps_per_epoch = 1

    # -- fit's hooks ---------------------------------------------------------------------
    def bind(self, context: ObjectiveContext) -> None:
        """Reset the state and seed the generator from ``(seed, rank)`` (see ``fit``)."""
        self.generator = torch.Generator(device=context.device)
        self.generator.manual_seed(context.seed * 1_000_003 + 7919 * (context.rank + 1))
        self.step = 0
        self.total_steps = context.total_steps
        self.steps_per_epoch = max(context.steps_per_epoch, 1)
        self.reset()

    def reset(self) -> None:
        """Subclasses: reset their own state (called by :meth:`bind`)."""

    def state_dict(self) -> dict[str, Any]:
        generator = self._generator().get_state()
        return {"step": self.step, "generator": generator, **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self._generator().set_state(state["generator"])
        self.load_extra_state(state)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Subclasses: restore what :meth:`extra_state` saved."""

    def epoch_end(self, model: nn.Module, record: dict[str, Any]) -> EpochReport:
        return EpochReport(metrics=self.epoch_report(model, record))

    def epoch_report(self, model: nn.Module, record: dict[str, Any]) -> dict[str, Any]:
        """Subclasses: metrics for the epoch record (schedules, regulariser values)."""
        return {}

    # -- the objective -------------------------------------------------------------------
    @property
    def progress(self) -> float:
        """Fraction of training done before the current step, in [0, 1]."""
        return min(self.step / self.total_steps, 1.0)

    @property
    def last_progress(self) -> float:
        """:attr:`progress` at the last step taken (what end-of-epoch reports describe)."""
        return min(max(self.step - 1, 0) / self.total_steps, 1.0)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        output = self.loss(model, x, y)
        self.step += 1
        return output

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        raise NotImplementedError

    def _generator(self) -> torch.Generator:
        if self.generator is None:  # used outside fit: seed 0 on the CPU
            self.generator = torch.Generator().manual_seed(0)
        return self.generator

    def generator_for(self, x: Tensor) -> torch.Generator:
        """The generator, created on ``x``'s device when the objective is used outside fit."""
        if self.generator is None:
            self.generator = torch.Generator(device=x.device).manual_seed(0)
        return self.generator


class RunningMean:
    """Batch-weighted mean of a per-step scalar, summed on the device (no sync per step)."""

    def __init__(self) -> None:
        self.total: Tensor | float = 0.0
        self.count = 0

    def add(self, value: Tensor, batch: int) -> None:
        self.total = self.total + value.detach().double() * batch
        self.count += batch

    def pop(self) -> float | None:
        """The mean since the last pop (None when empty), and reset."""
        mean = float(self.total) / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return mean

    def state(self) -> list[float]:
        return [float(self.total), float(self.count)]

    def load(self, state: list[float]) -> None:
        self.total, self.count = float(state[0]), int(state[1])
