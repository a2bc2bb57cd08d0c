r"""Curvature at a finite scale ``h``: finite-difference Hessian-vector products fed to Lanczos.

For a piecewise-linear (ReLU) network the pointwise input Hessian of the cross-entropy is
``J^T S J`` (``J`` the logit Jacobian, ``S = diag(p) - p p^T``): rank at most ``C - 1``, and its
size mostly follows the confidence ``1 - p_y``. The curvature that Fawzi et al. (2018,
"Empirical study of the topology and geometry of deep networks") profile and that CURE
(Moosavi-Dezfooli et al. 2019) regularises is the change of the gradient over a *finite*
distance ``h``. Here, for a unit vector ``q``,

    ``H_h q = (grad l(x + h q) - grad l(x - h q)) / (2 h)``

(the symmetric difference quotient: its error is ``O(h^2)`` for a smooth loss, so it converges to
the exact ``H q``; for ReLU networks it averages the Hessian over the activation regions
crossed within ``h``). Each call costs two gradient evaluations per point, no double backprop.
The operator is linear in ``q`` only to first order, so Lanczos on it (which only ever applies
it to unit vectors) gives the eigenvalues of the scale-``h`` curvature, not an exact spectrum.

When each is the right tool (see docs/geometry.md):

* **pointwise** (:class:`~advlab.geometry.hessian.HessianOperator`): smooth models (Softplus,
  GELU), CURE bounds from the local quadratic model, checks against autograd;
* **scale h** (:class:`ScaleHessianOperator`): ReLU networks, Fawzi's eigenvalue profile, CURE's
  regulariser, any comparison of "curvature" between models whose confidence differs;
* **confidence-normalised** (:func:`confidence_normalised`): ``lambda / (1 - p_y)``, the
  pointwise value with the confidence factor divided out, when only pointwise HVPs are available.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks._core import input_grad, model_guard, predict
from advlab.attacks.losses import LossFn, get_loss
from advlab.geometry._common import Randomness, check_batch, labels_or_predictions
from advlab.geometry.lanczos import lanczos
from advlab.threat import flat

__all__ = ["ScaleHessianOperator", "confidence_normalised", "eigenvalue_profile", "scale_hessian_eigs"]


class ScaleHessianOperator:
    """``q -> (grad l(x + h q) - grad l(x - h q)) / (2h)`` per point, for ``q`` ``(B, D)``.

    Args:
        model: classifier returning logits; run in eval mode with frozen parameters.
        x: points ``(B, ...)``; y: labels ``(B,)`` (``None``: the predictions).
        h: the scale (L2 length of the probe offsets, input units), > 0.
        loss: per-sample loss name or callable (default cross-entropy).

    A non-unit ``q`` is applied as ``||q|| H_h (q / ||q||)`` so that the probe points stay at
    distance ``h``. Calls are counted in :attr:`calls`.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor | None = None, *, h: float = 0.1,
                 loss: str | LossFn = "ce") -> None:
        if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
            raise ValueError(f"h must be a positive finite number (the scale in input units), got {h!r}")
        check_batch(x, y)
        self.model, self.x, self.h = model, x.detach(), float(h)
        self.loss_fn = get_loss(loss)
        with model_guard(model):
            self.labels = labels_or_predictions(model, x, y)
        self.batch_size, self.dim = x.shape[0], flat(x).shape[1]
        self.calls = 0

    def _gradient(self, points: Tensor) -> Tensor:
        with model_guard(self.model):
            grad, _, _ = input_grad(self.model, points, self.labels, self.loss_fn)
        return flat(grad)

    def __call__(self, v: Tensor) -> Tensor:
        if v.numel() != self.x.numel():
            raise ValueError(f"v must have {self.batch_size} x {self.dim} entries like x "
                             f"{tuple(self.x.shape)}, got shape {tuple(v.shape)}")
        self.calls += 1
        rows = v.reshape(self.batch_size, self.dim).to(self.x.dtype)
        norms = rows.norm(dim=1, keepdim=True)  # (B, 1)
        direction = (rows / norms.clamp_min(1e-30)).reshape(self.x.shape)
        plus = self._gradient(self.x + self.h * direction)
        minus = self._gradient(self.x - self.h * direction)
        product = (plus - minus) / (2.0 * self.h) * norms
        return product.reshape(v.shape).to(v.dtype)


def scale_hessian_eigs(model: nn.Module, x: Tensor, y: Tensor | None = None, k: int = 1, *,
                       h: float = 0.1, steps: int | None = None, loss: str | LossFn = "ce",
                       which: str = "LA", generator: Randomness = None) -> Tensor:
    """Top-``k`` eigenvalues ``(B, k)`` of the scale-``h`` curvature, by Lanczos on
    :class:`ScaleHessianOperator` (``steps`` operator calls, two gradients each, per point)."""
    operator = ScaleHessianOperator(model, x, y, h=h, loss=loss)
    values, _ = lanczos(operator, operator.dim, k, steps, batch_size=x.shape[0], which=which,
                        generator=generator, device=x.device)
    return values.to(x.dtype)


def confidence_normalised(model: nn.Module, x: Tensor, y: Tensor, values: Tensor) -> Tensor:
    """``values / (1 - p_y)`` per point ``(B,)``: divides out the confidence factor of ``J^T S J``."""
    with model_guard(model):
        probabilities = predict(model, x).softmax(dim=1)
    p_y = probabilities.gather(1, y.to(probabilities.device)[:, None])[:, 0]
    return values / (1.0 - p_y).clamp_min(1e-12).to(values)


def eigenvalue_profile(values: Tensor, *, low: float = 0.1, high: float = 0.9) -> dict[str, Tensor]:
    """Per rank: the median and the ``low``-``high`` quantile band over points of ``values`` ``(B, k)``
    (eigenvalues sorted per point), as ``{"median", "low", "high"}`` tensors ``(k,)``."""
    if values.dim() != 2:
        raise ValueError(f"values must be (points, k), got shape {tuple(values.shape)}")
    data = values.detach().double().cpu()
    quantiles = torch.quantile(data, torch.tensor([low, 0.5, high], dtype=torch.float64), dim=0)
    return {"low": quantiles[0], "median": quantiles[1], "high": quantiles[2]}
