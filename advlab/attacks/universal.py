"""Universal adversarial perturbations: one ``v`` that fools the classifier on most inputs.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard (2017), "Universal adversarial perturbations" (CVPR),
Algorithm 1: pass over the data in random order; for every point ``x_i`` whose prediction is not
yet changed by ``v``, compute the minimal DeepFool perturbation ``dv_i`` of ``x_i + v`` (away from
the clean prediction) and update ``v <- P_{p, xi}(v + dv_i)``, the projection onto the Lp ball of
radius ``xi``; stop once the fooling rate reaches ``1 - delta`` or after ``max_passes`` passes.

Batched variant (documented departure): the data are visited in shuffled mini-batches of
``batch_size`` points; DeepFool (:func:`advlab.attacks.deepfool`, reused) runs on the batch at
``clip(x + v)``, and ``v`` is updated once per batch with the **mean** of the perturbations of the
points that were still unfooled and that DeepFool moved across the boundary:
``v <- P(v + mean_i dv_i)``. Algorithm 1 applies the ``dv_i`` one after the other, which is
``batch_size`` times more sequential model calls. The mean keeps each update at the scale of one
minimal perturbation; the sum jumps to the sphere at once and oscillated from pass to pass (on the
8x8 digits CNN, linf ``xi = 0.15``: fooling rate 0.25 with the mean against 0.16 with the sum).

As in the authors' reference code the inner DeepFool is the L2 one whatever ``threat.norm``;
the projection ``P`` onto the ``linf`` or ``l2`` ball of radius ``xi = threat.eps`` enforces the
constraint (an Linf inner DeepFool reached a lower fooling rate, 0.20, in the same setting).
The fooling rate is not monotone over passes, so the ``v`` of the best pass is returned.

"Fooled" follows the paper: the prediction on ``clip(x + v)`` differs from the prediction on
``x`` (``fooling_rate``). The error with respect to the labels, ``pred(clip(x + v)) != y``, is
reported too (``error_rate``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_number
from advlab.attacks._core import check_inputs, check_logits, model_guard, predict
from advlab.attacks.deepfool import deepfool
from advlab.attacks.registry import register_attack
from advlab.streams import Randomness, batch_generator
from advlab.threat import ThreatModel

logger = logging.getLogger(__name__)


@dataclass
class UniversalResult:
    """What :func:`universal` found.

    Attributes:
        perturbation: ``v`` of shape ``x.shape[1:]`` with ``||v|| <= eps``.
        fooling_rate: fraction of ``x`` whose prediction changes under ``v`` (the paper's metric).
        fooling_rate_val: the same on ``x_val`` (``None`` without held-out data).
        error_rate: fraction of ``x`` misclassified (w.r.t. ``y``) under ``v``.
        error_rate_val: the same on ``(x_val, y_val)`` (``None`` without ``y_val``).
        passes: passes over the data that were run.
        history: the fooling rate on ``x`` after each pass (``perturbation`` is the best pass's).
    """

    perturbation: Tensor
    fooling_rate: float
    fooling_rate_val: float | None
    error_rate: float
    error_rate_val: float | None
    passes: int
    history: list[float] = field(default_factory=list)

    @property
    def v(self) -> Tensor:
        """Alias of :attr:`perturbation` (the paper's name)."""
        return self.perturbation


def _perturbed_predictions(model: nn.Module, x: Tensor, v: Tensor, threat: ThreatModel,
                           batch_size: int) -> Tensor:
    """Predicted classes ``(N,)`` on ``clip(x + v)``, evaluated in batches."""
    return torch.cat([predict(model, threat.clip(chunk + v)).argmax(dim=1)
                      for chunk in x.split(batch_size)])


def _batch_update(model: nn.Module, x_batch: Tensor, target: Tensor, v: Tensor, threat: ThreatModel,
                  deepfool_options: dict) -> Tensor:
    """Mean DeepFool perturbation ``x.shape[1:]`` of the unfooled points of one batch (0 if none)."""
    x_moved = threat.clip(x_batch + v)  # (b, ...)
    result = deepfool(model, x_moved, target, return_info=True, **deepfool_options)
    moved = result.success & (result.extras["steps"] > 0)  # unfooled before, fooled now
    if not bool(moved.any()):
        return torch.zeros_like(v)
    return (result.x_adv - x_moved)[moved].mean(dim=0)


@register_attack("universal", kind="universal")
def universal(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, delta: float = 0.2,
              max_passes: int = 10, overshoot: float = 0.02, deepfool_steps: int = 20,
              x_val: Tensor | None = None, y_val: Tensor | None = None, batch_size: int = 128,
              generator: Randomness = None,
              return_info: bool = False) -> Tensor | UniversalResult:
    """Universal perturbation (Moosavi-Dezfooli et al. 2017, Algorithm 1, batched variant).

    Args:
        model: classifier returning logits ``(B, K)``.
        x, y: the data ``(N, ...)`` and labels ``(N,)`` the perturbation is computed on.
        threat: ``linf`` or ``l2`` ball (``eps`` = the paper's ``xi``, one float) and bounds.
        delta: stop once the fooling rate on ``x`` reaches ``1 - delta`` (in ``[0, 1]``).
        max_passes: maximum passes over ``x`` (>= 1).
        overshoot, deepfool_steps: options of the inner (L2) DeepFool.
        x_val, y_val: optional held-out data for ``fooling_rate_val`` / ``error_rate_val``.
        batch_size: points per DeepFool call and per update of ``v`` (>= 1).
        generator: drives the shuffled order of every pass.
        return_info: return a :class:`UniversalResult` instead of ``v``.

    Returns:
        ``v`` of shape ``x.shape[1:]`` with ``||v|| <= threat.eps``.
    """
    _check_options(threat, delta, max_passes, batch_size)
    options = {"norm": "l2", "steps": deepfool_steps, "overshoot": overshoot, "bounds": threat.bounds}
    eps = torch.tensor([float(threat.eps)], device=x.device, dtype=x.dtype)
    with model_guard(model):
        check_inputs(x, y, threat)
        logits = predict(model, x, batch_size)  # (N, K)
        check_logits(logits, y)
        x, clean_pred = x.detach(), logits.argmax(dim=1)
        v = best_v = torch.zeros_like(x[0])  # (C, H, W)
        history: list[float] = []
        generator = batch_generator(generator)  # the shuffles are batch-level draws
        for _ in range(max_passes):
            order = torch.randperm(len(x), generator=generator,
                                   device=generator.device if generator is not None else "cpu")
            for index in order.split(batch_size):
                index = index.to(x.device)
                step = _batch_update(model, x[index], clean_pred[index], v, threat, options)
                v = threat.project_delta((v + step)[None], eps)[0]
            fooled = _perturbed_predictions(model, x, v, threat, batch_size) != clean_pred
            history.append(float(fooled.float().mean()))
            logger.info("universal: pass %d fooling rate %.3f", len(history), history[-1])
            if history[-1] >= max(history):
                best_v = v
            if history[-1] >= 1 - delta:
                break
        if not return_info:
            return best_v
        return _summarise(model, x, y, best_v, threat, clean_pred, history, x_val, y_val, batch_size)


def _check_options(threat: ThreatModel, delta: float, max_passes: int, batch_size: int) -> None:
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be a ThreatModel, got {type(threat).__name__}")
    if threat.norm not in ("linf", "l2"):
        raise ValueError(f"universal supports threat norms 'linf' and 'l2', got {threat.norm!r}")
    if isinstance(threat.eps, Tensor) and threat.eps.numel() != 1:
        raise ValueError("universal needs one radius for all points: pass a float eps")
    check_number("delta", delta, minimum=0.0)
    if delta > 1:
        raise ValueError(f"delta must lie in [0, 1], got {delta!r}")
    check_int("max_passes", max_passes)
    check_int("batch_size", batch_size)


def _summarise(model: nn.Module, x: Tensor, y: Tensor, v: Tensor, threat: ThreatModel,
               clean_pred: Tensor, history: list[float], x_val: Tensor | None,
               y_val: Tensor | None, batch_size: int) -> UniversalResult:
    """Fooling and error rates of ``v`` on the training and held-out data."""
    pred = _perturbed_predictions(model, x, v, threat, batch_size)
    fooling_val = error_val = None
    if x_val is not None:
        check_inputs(x_val, y_val, threat)
        pred_val = _perturbed_predictions(model, x_val, v, threat, batch_size)
        clean_val = predict(model, x_val, batch_size).argmax(dim=1)
        fooling_val = float((pred_val != clean_val).float().mean())
        if y_val is not None:
            error_val = float((pred_val != y_val.to(pred_val.device)).float().mean())
    return UniversalResult(perturbation=v, fooling_rate=float((pred != clean_pred).float().mean()),
                           fooling_rate_val=fooling_val,
                           error_rate=float((pred != y).float().mean()), error_rate_val=error_val,
                           passes=len(history), history=history)
