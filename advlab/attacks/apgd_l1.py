"""APGD-L1 (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers", ICML): the L1 runs of :func:`advlab.attacks.apgd.apgd`.

What makes the L1 attack work where a plain sparse step fails:

* **the box**: the iterate is projected exactly onto the L1 ball *intersected with* the box
  (:func:`advlab.threat.project_l1_box`), not onto the ball and then clipped; and the sparse step
  ignores coordinates that sit on a bound with their gradient pointing outwards (they cannot
  move, so mass spent on them is lost);
* **adaptive sparsity**: the step moves the top ``k`` coordinates of ``|grad|`` by ``eta / k``
  each, with ``k`` a fraction of the dimension (20 % at first) reset at every checkpoint (every
  4 % of the steps) to the sparsity of the best point found divided by 1.5; the step size
  ``eta`` starts at ``eps``, is divided by 1.5 at each checkpoint and reset to ``eps`` (with a
  restart from the best point) when the sparsity fell by more than 5 %, within
  ``[eps / 10, eps]``;
* **larger radii first** (``large_eps``, AutoAttack's L1 schedule): 30 % of the steps at
  ``3 eps`` from standard Gaussian noise projected onto that ball, 30 % at ``2 eps`` and the
  rest at ``eps``, each stage starting from the previous stage's point projected onto the
  smaller ball; only iterates of the last stage count.

Shapes: ``x`` ``(B, ...)``; per-sample quantities ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from advlab import streams
from advlab.threat import flat, per_sample_view

State = dict[str, Tensor]
#: (factor of eps, share of the steps) of the stages with ``large_eps``
STAGES = ((3.0, 0.3), (2.0, 0.3), (1.0, 0.4))
INITIAL_SPARSITY, SPARSITY_DIVISOR, STEP_DIVISOR, MIN_STEP_FRACTION = 0.2, 1.5, 1.5, 0.1


def sparse_direction(grad: Tensor, x_adv: Tensor, fraction: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Unit-L1 ascent direction on the top ``fraction`` ``(B,)`` of the coordinates of ``|grad|``
    that can move (not on a bound with the gradient pointing outwards): ``(B, ...)``."""
    low, high = bounds
    g, point = flat(grad), flat(x_adv)
    stuck = ((point >= high) & (g > 0)) | ((point <= low) & (g < 0))
    g = g.masked_fill(stuck, 0.0)
    d = g.shape[1]
    count = (fraction * d).ceil().clamp(1, d).long()  # (B,)
    ranked = g.abs().sort(dim=1, descending=True).values
    threshold = ranked.gather(1, (count - 1)[:, None])
    mask = (g.abs() >= threshold) & (g != 0)
    direction = g.sign() * mask
    return (direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)).reshape(grad.shape)


def _l0(delta: Tensor) -> Tensor:
    return (flat(delta) != 0).sum(dim=1).to(delta.dtype)


def run_l1(cfg: Any, best: Any, s: State, *, evaluate: Callable, drop: Callable) -> None:
    """APGD-L1 from ``s["x_adv"]`` on the samples of ``s``; ``evaluate(cfg, s, x_adv, need_grad)``
    and ``drop(s, mask)`` are APGD's (:mod:`advlab.attacks.apgd`)."""
    stages = STAGES if cfg.large_eps else ((1.0, 1.0),)
    x_adv = s["x_adv"]
    done = 0
    for k, (factor, share) in enumerate(stages):
        steps = cfg.steps - done if k == len(stages) - 1 else max(1, int(share * cfg.steps))
        done += steps
        eps = s["eps"] * factor
        if k == 0 and cfg.large_eps:  # AutoAttack's start: Gaussian noise projected onto 3 eps
            noise = streams.randn(tuple(x_adv.shape), streams.for_rows(cfg.generator, s["index"]),
                                  device=x_adv.device, dtype=x_adv.dtype)
            x_adv = s["x"] + noise
        x_adv = cfg.threat.project_l1(s["x"], x_adv, eps)
        final = factor == 1.0
        x_adv = _stage(cfg, best, dict(s), x_adv, eps, steps, final, first=k == 0,
                       evaluate=evaluate, drop=drop)
        if x_adv is None:
            return


def _stage(cfg: Any, best: Any, s: State, x_adv: Tensor, eps: Tensor, steps: int, final: bool,
           first: bool, *, evaluate: Callable, drop: Callable) -> Tensor | None:
    """One stage at radii ``eps`` ``(B,)``; returns its last iterates (None when nothing is left)."""
    grad, loss, score, success = evaluate(cfg, s, x_adv)
    if final:
        best.update(s["index"], x_adv, score, success)
    d = s["x"][0].numel()
    sparsity = torch.full_like(loss, INITIAL_SPARSITY) if first else _l0(x_adv - s["x"]) / d / SPARSITY_DIVISOR
    s.update(x_adv=x_adv, grad=grad, loss=loss, x_max=x_adv, grad_max=grad, loss_max=loss,
             eps_stage=eps, eta=eps.clone(), sparsity=sparsity.clamp_min(1.0 / d),
             sparsity_old=torch.full_like(loss, float(d)) if first else _l0(x_adv - s["x"]))
    interval = max(int(0.04 * steps), 1)
    for i in range(steps):
        if final and cfg.early_stop:
            s = drop(s, success)
        if s["index"].numel() == 0:
            return None
        direction = sparse_direction(s["grad"], s["x_adv"], s["sparsity"], cfg.threat.bounds)
        step = s["x_adv"] + per_sample_view(s["eta"], direction) * direction
        x_next = cfg.threat.project_l1(s["x"], step, s["eps_stage"])
        grad, loss, score, success = evaluate(cfg, s, x_next, need_grad=i + 1 < steps)
        if final:
            best.update(s["index"], x_next, score, success)
        if grad is None:
            return x_next
        improved = loss > s["loss_max"]
        mask = per_sample_view(improved, x_next)
        s["x_max"] = torch.where(mask, x_next, s["x_max"])
        s["grad_max"] = torch.where(mask, grad, s["grad_max"])
        s["loss_max"] = torch.where(improved, loss, s["loss_max"])
        s["x_adv"], s["grad"] = x_next, grad
        if (i + 1) % interval == 0:
            _adapt(s, d)
    return s["x_adv"]


def _adapt(s: State, d: int) -> None:
    """The checkpoint: sparsity from the best point, step size down (or reset and restart)."""
    current = _l0(s["x_max"] - s["x"])
    reset = current / s["sparsity_old"].clamp_min(1.0) < 0.95
    s["sparsity"] = (current / d / SPARSITY_DIVISOR).clamp_min(1.0 / d)
    eps = s["eps_stage"]
    eta = torch.where(reset, eps, s["eta"] / STEP_DIVISOR)
    s["eta"] = torch.minimum(torch.maximum(eta, eps * MIN_STEP_FRACTION), eps)
    s["sparsity_old"] = current
    mask = per_sample_view(reset, s["x_adv"])
    s["x_adv"] = torch.where(mask, s["x_max"], s["x_adv"])
    s["grad"] = torch.where(mask, s["grad_max"], s["grad"])
