r"""Bounds on the minimal adversarial perturbation from the local quadratic model of the loss.

Moosavi-Dezfooli, Fawzi, Uesato & Frossard (2019), "Robustness via curvature regularization, and
vice versa" (CVPR), bound the norm of the smallest perturbation that raises the loss to the
value ``t`` at which the label flips, using only the gradient and the top of the input-Hessian
spectrum. Their argument, with the notation used here:

Model and assumptions. Around ``x`` the loss is exactly quadratic,
``l(x + r) = l(x) + g^T r + 1/2 r^T H r`` (``g`` the input gradient, ``H`` the symmetric input
Hessian), for every ``r`` up to the norms considered; ``c = t - l(x) > 0`` is the rise needed
(``c <= 0``: already at or past the threshold, ``||r*|| = 0``). ``nu = lambda_max(H)`` with unit
eigenvector ``u``. ``r* = argmin ||r|| s.t. l(x + r) >= t``.

Lower bound. For any ``r``, ``g^T r <= ||g|| ||r||`` and ``r^T H r <= nu ||r||^2``, so
``l(x + r) - l(x) <= ||g|| rho + 1/2 nu rho^2`` with ``rho = ||r||``. A perturbation reaching
the threshold therefore needs ``||g|| rho + 1/2 nu rho^2 >= c``, i.e.
``||r*|| >= rho(||g||, nu, c)`` where ``rho(a, kappa, c)`` is the smallest ``rho >= 0`` with
``a rho + 1/2 kappa rho^2 >= c``:
``rho = 2c / (a + sqrt(a^2 + 2 kappa c)) = (a / kappa) (sqrt(1 + 2 kappa c / a^2) - 1)``
(the paper's form for ``kappa > 0``; the first form is also valid for ``kappa <= 0`` and free of
cancellation; ``inf`` when ``a^2 + 2 kappa c < 0``: the model never reaches ``t``).

Upper bounds. Any feasible ``r`` bounds ``||r*||`` from above. Along ``+-u`` (sign chosen so that
the linear term is non-negative) the loss rises as ``|g^T u| rho + 1/2 nu rho^2``, giving the
paper's upper bound ``rho(|g^T u|, nu, c)``; along the gradient direction ``g / ||g||`` it rises as
``||g|| rho + 1/2 kappa_g rho^2`` with ``kappa_g = g^T H g / ||g||^2``, giving ``rho(||g||, kappa_g, c)``.
We report both and their minimum as ``upper``. Both bounds coincide with the first-order
(DeepFool-like) estimate ``c / ||g||`` when ``H = 0`` and tighten as ``g`` aligns with ``u``: small
curvature ``nu`` and a large gradient mean a small ``||r*||``, large curvature widens the gap.

The threshold. With the margin loss ``cw`` (``max_{j != y} z_j - z_y``), ``t = 0`` is exactly the
decision boundary, so the bounds bracket the distance to the boundary of the current runner-up
class (within the region where the runner-up does not change; another class may be closer, so the
true minimal adversarial perturbation is at most the upper bound). This is the default. With
cross-entropy the default ``t = log 2``: a flip needs ``p_y <= 1/2``, i.e. ``CE >= log 2``, so the
lower bound stays a lower bound on the flip distance while the upper bound only bounds the
distance to ``CE = log 2`` (exact for two classes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advlab.attacks._core import input_grad, model_guard
from advlab.attacks.losses import LossFn
from advlab.geometry.hessian import HessianOperator
from advlab.geometry.lanczos import lanczos
from advlab.geometry.scale import ScaleHessianOperator
from advlab.threat import flat

#: Loss value at which the label flips (see the module docstring), per loss name.
THRESHOLDS = {"cw": 0.0, "margin": 0.0, "dlr": 0.0, "ce": math.log(2.0)}


def smallest_step(linear: Tensor, curvature: Tensor, gap: Tensor) -> Tensor:
    """Smallest ``rho >= 0`` with ``linear * rho + curvature * rho^2 / 2 >= gap``, elementwise.

    ``linear >= 0``. Returns ``0`` where ``gap <= 0`` and ``inf`` where the parabola stays below
    ``gap`` (``linear^2 + 2 curvature gap < 0``, or ``linear = 0`` and ``curvature <= 0``).
    """
    discriminant = linear.pow(2) + 2.0 * curvature * gap
    denominator = linear + discriminant.clamp_min(0.0).sqrt()
    rho = 2.0 * gap / denominator
    unreachable = (discriminant < 0) | (denominator <= 0)
    rho = torch.where(unreachable, torch.full_like(rho, math.inf), rho)
    return torch.where(gap <= 0, torch.zeros_like(rho), rho)


def quadratic_bounds(gap: Tensor, gradient_norm: Tensor, top_eigenvalue: Tensor,
                     top_projection: Tensor, gradient_curvature: Tensor) -> dict[str, Tensor]:
    """The bounds of the module docstring from their ingredients, all ``(B,)`` tensors.

    Args:
        gap: ``c = t - l(x)``; gradient_norm: ``||g||``; top_eigenvalue: ``nu = lambda_max(H)``;
        top_projection: ``|g^T u|``; gradient_curvature: ``g^T H g / ||g||^2``.

    Returns:
        ``lower``, ``upper`` (= min of the two next), ``upper_eigenvector``, ``upper_gradient``
        and ``first_order`` (``c / ||g||``).
    """
    upper_eigenvector = smallest_step(top_projection, top_eigenvalue, gap)
    upper_gradient = smallest_step(gradient_norm, gradient_curvature, gap)
    first_order = smallest_step(gradient_norm, torch.zeros_like(gap), gap)
    return {
        "lower": smallest_step(gradient_norm, top_eigenvalue, gap),
        "upper": torch.minimum(upper_eigenvector, upper_gradient),
        "upper_eigenvector": upper_eigenvector,
        "upper_gradient": upper_gradient,
        "first_order": first_order,
    }


def _threshold(loss: str | LossFn, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    key = loss.strip().lower() if isinstance(loss, str) else None
    if key not in THRESHOLDS:
        raise ValueError(f"no default threshold for loss {loss!r}; pass threshold=<loss value at "
                         "which the label flips>")
    return THRESHOLDS[key]


def _operator(model: nn.Module, x: Tensor, y: Tensor | None, loss: str | LossFn, curvature: str,
              h: float) -> tuple[Any, Tensor, Tensor]:
    """``(operator, gradient (B, D) float64, loss (B,) float64)`` of the chosen curvature."""
    if curvature == "pointwise":
        operator = HessianOperator(model, x, y, loss)
        return operator, flat(operator.gradient).double(), operator.loss.double()
    if curvature != "scale":
        raise ValueError(f"curvature must be 'pointwise' or 'scale', got {curvature!r}")
    operator = ScaleHessianOperator(model, x, y, h=h, loss=loss)
    with model_guard(model):
        gradient, values, _ = input_grad(model, x, operator.labels, operator.loss_fn)
    return operator, flat(gradient).double(), values.double()


def curvature_bounds(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                     loss: str | LossFn = "cw", threshold: float | None = None,
                     steps: int = 30, curvature: str = "pointwise", h: float = 0.5,
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """CURE's lower and upper bounds on ``||r*||`` (L2) from the local quadratic model of the loss.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: points ``(B, ...)``; y: labels ``(B,)`` (``None``: the predicted classes).
        loss: per-sample loss whose level ``threshold`` marks the flip; default the margin loss
            ``cw`` with threshold 0 (the decision boundary); ``ce`` uses ``log 2``.
        threshold: ``t``; ``None`` uses :data:`THRESHOLDS`.
        steps: Lanczos steps (HVPs) for the top eigenpair (``which="LA"``: ``lambda_max``).
            An unconverged Ritz value underestimates ``lambda_max`` (so ``lower`` may be slightly
            too large); ``upper_eigenvector`` stays valid, since it only uses the Ritz pair's
            own curvature ``u^T H u``.
        curvature: ``"pointwise"`` (the exact input Hessian ``H``: the paper's bounds, rigorous
            when the loss is quadratic) or ``"scale"`` (``H`` replaced by the curvature at scale
            ``h``, :class:`~advlab.geometry.scale.ScaleHessianOperator`: the change of the
            gradient over a distance ``h``, which sees the kinks of a ReLU network that the
            pointwise Hessian misses; then the bounds are those of the quadratic model with the
            secant curvature, not guaranteed, and are checked against ``r*`` by the caller).
        h: the scale of ``curvature="scale"`` (L2, input units).
        generator: Lanczos start vector.

    Returns:
        dict of ``(B,)`` tensors: ``lower``, ``upper``, ``upper_eigenvector``, ``upper_gradient``,
        ``first_order`` (see :func:`quadratic_bounds`), and the ingredients ``loss``, ``gap``,
        ``gradient_norm``, ``top_eigenvalue``, ``top_projection``, ``gradient_curvature``.
    """
    t = _threshold(loss, threshold)
    operator, gradient, values = _operator(model, x, y, loss, curvature, h)
    gradient_norm = gradient.norm(dim=1)
    top, vectors = lanczos(operator, operator.dim, 1, min(operator.dim, steps), batch_size=x.shape[0],
                           which="LA", generator=generator, device=x.device)
    top_eigenvalue, top_vector = top[:, 0], vectors[:, 0]  # (B,), (B, D)
    direction = gradient / gradient_norm.clamp_min(1e-300)[:, None]
    gradient_curvature = (flat(operator(direction.to(x.dtype))).double() * direction).sum(dim=1)
    ingredients = {
        "loss": values,
        "gap": t - values,
        "gradient_norm": gradient_norm,
        "top_eigenvalue": top_eigenvalue,
        "top_projection": (gradient * top_vector).sum(dim=1).abs(),
        "gradient_curvature": gradient_curvature,
    }
    bounds = quadratic_bounds(ingredients["gap"], gradient_norm, top_eigenvalue,
                              ingredients["top_projection"], gradient_curvature)
    return {name: value.to(x.dtype) for name, value in {**bounds, **ingredients}.items()}
