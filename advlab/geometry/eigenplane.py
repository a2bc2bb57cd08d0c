r"""The plane of the adversarial direction and the top curvature direction, and the curvature in it.

Moosavi-Dezfooli, Fawzi, Uesato & Frossard (2019, "Robustness via curvature regularization, and
vice versa", CURE) show the loss of a standard network bending sharply in the plane spanned by
the adversarial direction and the direction of largest curvature, and adversarial training
flattening it. Per point ``x`` ``(N, ...)``:

* ``u`` = the model's DeepFool direction, unit L2;
* ``v`` = the top eigenvector (largest algebraic eigenvalue) of the cross-entropy curvature at
  scale ``h`` (:class:`~advlab.geometry.scale.ScaleHessianOperator`, symmetric finite differences
  of input gradients, Lanczos), orthogonalised against ``u``; when that eigenvector is (nearly)
  ``u`` itself the second one is used;
* the curvature of the loss along a unit direction ``d`` at step ``s``:
  ``(l(x + s d) - 2 l(x) + l(x - s d)) / s^2`` (loss units per squared input unit). For a smooth
  loss it tends to ``d^T H d`` as ``s -> 0``; at ``s = h`` along ``v`` it is the scale-``h``
  curvature that the eigenvalue profiles show, restricted to the plane. The points are not
  clamped to the input box (that would bend the line).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard
from advlab.attacks.losses import get_loss
from advlab.geometry._common import check_batch, random_normal, unit
from advlab.geometry.lanczos import lanczos
from advlab.geometry.scale import ScaleHessianOperator
from advlab.threat import flat

#: ``|cos(u, e1)|`` above which the first eigenvector is taken as ``u`` itself and the second used.
PARALLEL = 0.99


def _orthogonal(direction: Tensor, u: Tensor) -> Tensor:
    """``direction - (direction . u) u`` per sample, ``(N, D)`` flat rows."""
    return direction - (direction * u).sum(dim=1, keepdim=True) * u


def eigen_plane(model: nn.Module, x: Tensor, y: Tensor, direction: Tensor, *, h: float,
                steps: int | None = None, generator: torch.Generator | None = None,
                restrict: bool = False) -> dict[str, Tensor]:
    """``u`` (unit ``direction``) and ``v`` (top scale-``h`` eigenvector orthogonalised against ``u``).

    With ``restrict`` the eigenvector is the top one of the curvature restricted to the
    complement of ``u``, ``P H_h P`` with ``P = I - u u^T`` (Lanczos on the projected operator):
    the direction orthogonal to ``u`` along which the loss curves most. Without it (the default),
    the top eigenvector of ``H_h`` itself, Gram-Schmidt against ``u``; for ReLU networks it is often
    close to ``u`` (``cosine`` near 1), and what is left is only part of an eigendirection.

    Args:
        model: classifier returning logits; x: points ``(N, ...)``; y: labels ``(N,)``.
        direction: the adversarial direction per point ``(N, ...)`` (e.g. DeepFool's ``r``), non-zero.
        h: the curvature scale (L2, input units); steps: Lanczos steps (two gradients each).
        generator: Lanczos start vectors (and a random ``v`` where both eigenvectors are ``u``).

    Returns:
        dict with ``u``, ``v`` ``(N, ...)`` orthonormal per point, ``eigenvalue`` ``(N,)`` (of the
        eigenvector used), ``cosine`` ``(N,)`` = ``|cos(u, e1)|`` and ``used_second`` ``(N,)`` bool.
    """
    check_batch(x, y)
    if direction.shape != x.shape:
        raise ValueError(f"direction must have the shape of x {tuple(x.shape)}, got {tuple(direction.shape)}")
    if bool((flat(direction).norm(dim=1) == 0).any()):
        raise ValueError("direction is zero for some point; pass a DeepFool perturbation or a gradient")
    operator = ScaleHessianOperator(model, x, y, h=h)
    u = flat(unit(direction)).double()
    k = min(2, operator.dim)

    def projected(q: Tensor) -> Tensor:
        rows = _orthogonal(q.reshape(len(x), -1).double(), u.to(q.device))
        return _orthogonal(operator(rows.to(q.dtype)).reshape(len(x), -1).double(), u.to(q.device))

    values, vectors = lanczos(projected if restrict else operator, operator.dim, k, steps, batch_size=len(x),
                              which="LA", generator=generator, device=x.device)  # (N, k), (N, k, D)
    cosine = (vectors[:, 0] * u).sum(dim=1).abs()  # (N,)
    second = cosine > PARALLEL if k > 1 else torch.zeros_like(cosine, dtype=torch.bool)
    pick = second.long()[:, None, None].expand(-1, 1, vectors.shape[2])
    chosen = vectors.gather(1, pick)[:, 0]  # (N, D)
    eigenvalue = values.gather(1, second.long()[:, None])[:, 0]
    v = _orthogonal(chosen, u)
    degenerate = v.norm(dim=1) <= 1e-6
    if bool(degenerate.any()):  # both eigenvectors along u (d <= 2): any orthogonal direction
        other = _orthogonal(random_normal(tuple(u.shape), generator=generator, device=u.device,
                                          dtype=u.dtype), u)
        v = torch.where(degenerate[:, None], other, v)
    v = v / v.norm(dim=1, keepdim=True)
    return {"u": u.reshape(x.shape).to(x.dtype), "v": v.reshape(x.shape).to(x.dtype),
            "eigenvalue": eigenvalue.to(x.dtype), "cosine": cosine.to(x.dtype), "used_second": second}


def second_difference(model: nn.Module, x: Tensor, y: Tensor, direction: Tensor, *,
                      step: float) -> Tensor:
    """``(l(x + s d) - 2 l(x) + l(x - s d)) / s^2`` per point ``(N,)``, cross-entropy ``l``, ``d``
    the unit ``direction`` ``(N, ...)``, ``s = step``; float64."""
    check_batch(x, y)
    if not step > 0:
        raise ValueError(f"step must be positive (input units), got {step!r}")
    d = unit(direction)
    loss = get_loss("ce")
    with model_guard(model), torch.no_grad():
        points = torch.cat([x + step * d, x, x - step * d])  # (3N, ...)
        values = loss(model(points), y.repeat(3)).double().reshape(3, len(x))
    return (values[0] - 2.0 * values[1] + values[2]) / step**2
