"""Adaptive attacks in the ensemble: EOT for randomised models, BPDA for shattered gradients and
a surrogate (transfer) step (Athalye, Carlini & Wagner 2018; Tramer et al. 2020).

* randomised model: the gradient attacks follow the expectation over ``eot_samples`` passes
  (AutoAttack-rand uses 20); the black-box probe uses fewer passes (it only needs the sign of a
  loss difference, and every candidate is decided by the majority vote over draws anyway);
* shattered gradients (the margin-loss gradient is zero, NaN or tiny on many points): the
  gradient attacks are re-run on :class:`~advlab.attacks.bpda.StraightThrough` (forward exact,
  straight-through backward for rounding, sign and thresholds) before the black-box attack;
* ``surrogate``: the gradient attacks are re-run with the surrogate's backward pass
  (:class:`~advlab.attacks.bpda.BackwardSurrogate`), and a transfer step crafts examples on the
  surrogate alone.

Every candidate of these steps is verified on the real model (:mod:`advlab.evaluation.ensemble`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import Tensor, nn

from advlab.attacks.bpda import BackwardSurrogate, StraightThrough
from advlab.evaluation.presets import AttackFn, AttackStep
from advlab.evaluation.sanity import Flag, gradient_flags

#: black-box probe passes per query on a randomised model (the gradient attacks use ``eot_samples``)
PROBE_PASSES = 4


class EOT(nn.Module):
    """Expectation over Transformation (Athalye et al. 2018): average the logits of ``samples``
    forward passes of a randomised model, so attack gradients follow the expected output."""

    def __init__(self, model: nn.Module, samples: int = 20) -> None:
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x: Tensor) -> Tensor:
        total = self.model(x)
        for _ in range(self.samples - 1):
            total = total + self.model(x)
        return total / self.samples


def _bind(fn: AttackFn | None, target: nn.Module) -> AttackFn | None:
    """``fn`` attacking ``target`` whatever model the ensemble passes it."""
    if fn is None:
        return None

    def run(model: nn.Module, x: Tensor, y: Tensor, threat, generator=None) -> Tensor:  # noqa: ANN001
        return fn(target, x, y, threat, generator=generator)

    return run


def rebound(steps: list[AttackStep], target: nn.Module, prefix: str | None,
            keep: Callable[[AttackStep], bool], stand_in: bool = True) -> list[AttackStep]:
    """Copies of the ``steps`` that ``keep`` selects, attacking ``target`` (renamed ``prefix-name``)."""
    return [dataclasses.replace(s, name=f"{prefix}-{s.name}" if prefix else s.name,
                                run=_bind(s.run, target), escalate=_bind(s.escalate, target),
                                stand_in=target if stand_in else None)
            for s in steps if keep(s)]


def _before_blackbox(ensemble: list[AttackStep], extra: list[AttackStep]) -> list[AttackStep]:
    first = next((k for k, s in enumerate(ensemble) if s.blackbox), len(ensemble))
    return ensemble[:first] + extra + ensemble[first:]


def _eot(model: nn.Module, randomized: bool, samples: int) -> nn.Module:
    return EOT(model, samples) if randomized else model


def adapt(model: nn.Module, ensemble: list[AttackStep], *, randomized: bool, eot_samples: int,
          masked: bool, bpda: bool | None, surrogate: nn.Module | None, x: Tensor, y: Tensor
          ) -> tuple[nn.Module, list[AttackStep], list[Flag], bool]:
    """The model the ensemble attacks, the ensemble with its adaptive steps added, their flags,
    and whether the straight-through steps restored usable gradients (the masking is handled:
    the black-box attack then probes and escalates like on any model).

    ``x``, ``y``: a few correctly classified points ``(B, ...)``, ``(B,)`` to check that
    straight-through gradients exist. ``bpda``: ``None`` (when ``masked``), True or False.
    """
    flags: list[Flag] = []
    handled = False
    attack_model = _eot(model, randomized, eot_samples)
    if randomized:
        probe = EOT(model, min(PROBE_PASSES, eot_samples))
        ensemble = [rebound([s], probe, None, lambda _: True, stand_in=False)[0] if s.blackbox else s
                    for s in ensemble]
    gradient = [s for s in ensemble if not s.blackbox]
    extra: list[AttackStep] = []
    if bpda or (bpda is None and masked):
        straight = StraightThrough(model)
        _, still_masked = gradient_flags(straight, x, y)
        handled = not still_masked
        if bpda or not still_masked:
            extra += rebound(gradient, _eot(straight, randomized, eot_samples), "bpda", lambda _: True)
            flags.append(Flag("unavailable_gradients", "the gradient attacks were re-run with "
                              "straight-through backward passes (BPDA; forward exact, candidates "
                              "verified on the model)" + ("; the straight-through gradients are "
                                                          "masked too" if still_masked else "")))
        else:
            flags.append(Flag("unavailable_gradients", "straight-through backward passes give no "
                              "gradient either: only the black-box attack can move these points"))
    if surrogate is not None:
        backward = _eot(BackwardSurrogate(model, surrogate), randomized, eot_samples)
        extra += rebound(gradient, backward, "surrogate", lambda _: True)
        extra += rebound(gradient[:1], surrogate, "transfer", lambda _: True)
    return attack_model, _before_blackbox(ensemble, extra), flags, handled
