"""Random-noise robustness, all in one place (Fawzi, Moosavi-Dezfooli & Frossard 2016).

"Robustness of classifiers: from adversarial to random noise" (NeurIPS): for a classifier whose
decision boundary is locally flat, the minimal perturbation ``r_S`` restricted to a random
subspace ``S`` of dimension ``m`` satisfies, with high probability, ``zeta_1(m, delta) *
sqrt(d/m) * ||r*|| <= ||r_S|| <= zeta_2(m, delta) * sqrt(d/m) * ||r*||`` where ``r*`` is the
minimal (adversarial) perturbation, ``d`` the input dimension and ``zeta_1, zeta_2`` depend only
on ``m`` and the failure probability ``delta`` (they tend to 1 as ``m`` grows). For ``m = 1`` (a
random line: random noise) the ratio is of order ``sqrt(d)``; for ``m = d`` it is 1 (the
adversarial regime). For a linear binary classifier ``f(x) = w.x + b`` the exact values are
``||r*|| = |f(x)| / ||w||`` and ``||r_S|| = |f(x)| / ||P_S w||``.

* :func:`minimal_noise_norm`: the smallest random perturbation that flips the prediction, per
  sample (random lines or directions in a random subspace, scan then bisection);
* :func:`subspace_minimal_norm`: DeepFool restricted to a random ``m``-dimensional subspace;
* :func:`noise_robustness`: their ratio to the adversarial norms against ``sqrt(d / m)`` (what
  ``advlab geometry`` reports as the noise ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advlab._checks import check_int
from advlab._utils import json_safe
from advlab.attacks._core import input_grad, model_guard, predict, prepare
from advlab.attacks.losses import margin
from advlab.attacks.result import AttackResult
from advlab.evaluation._noise_search import (
    CHUNK_ELEMENTS,
    check_minimal_options,
    directions_of,
    minimal_chunk,
)
from advlab.threat import ThreatModel, canonical_norm, lp_norm

__all__ = ["NoiseRobustness", "minimal_noise_norm", "noise_robustness", "subspace_minimal_norm"]


def minimal_noise_norm(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "l2",
                       directions: int | Tensor = 10, max_norm: float | None = None,
                       bisection_steps: int = 20, scan_steps: int = 8, subspace_dim: int | None = None,
                       bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 8192,
                       generator: torch.Generator | None = None) -> AttackResult:
    """The smallest random perturbation that changes the prediction, per sample (Fawzi et al. 2016).

    Each random unit direction ``u`` defines the line ``x + t u`` (both rays, ``+u`` and ``-u``,
    are searched: the minimal perturbation within ``span(u)``); the flip distance along a ray is
    found by a scan of ``scan_steps`` points over ``(0, max_norm]`` then ``bisection_steps``
    bisection steps (precision ``max_norm / scan_steps / 2**bisection_steps``). The result per
    sample is the minimum over directions. With ``subspace_dim=m`` the directions are uniform in a
    random ``m``-dimensional subspace per sample (QR of a Gaussian ``d x m`` matrix), and the
    minimum over ``directions`` of them approximates from above the minimal perturbation ``r_S``
    within the subspace (exact for ``m = 1``; use ``directions >> m``). Ratios of these norms to
    the adversarial (DeepFool/C&W) norms give the random-versus-adversarial factor, about
    ``sqrt(d/m)`` for flat boundaries.

    Points are clipped into ``bounds``: near the bounds clipping bends the ray, and the reported
    norm is that of the perturbation actually applied, ``||clip(x + t u) - x||`` (``<= t``); the
    step length ``t`` is in ``extras["step_norms"]``. A prediction that flips and flips back
    between two scan points can be missed (the boundary is then non-convex along the ray).

    Args:
        model: classifier returning logits ``(B, K)``; x: ``(B, ...)`` in ``bounds``; y: ``(B,)``.
        norm: the norm of the directions and of the reported distances (``l2`` default,
            ``linf``, ``l1``); directions are uniform on the unit sphere of that norm.
        directions: number of random directions per sample (default 10), or a tensor of given
            directions ``(k, *x.shape[1:])`` (shared) or ``(B, k, *x.shape[1:])`` (normalised here).
        max_norm: the largest step searched; default the diameter of the box in ``norm``
            (``(high - low) * d^(1/p)``).
        bisection_steps, scan_steps: search effort (defaults 20 and 8).
        subspace_dim: draw directions inside a random subspace of this dimension.
        bounds: the valid input box. batch_size: points per forward pass.
        generator: randomness of the directions.

    Returns:
        :class:`~advlab.attacks.AttackResult`: ``x_adv`` (the flipped point of the best direction, ``x`` where
        none flipped), ``norms`` ``(B,)`` (``inf`` where no direction flips within ``max_norm``, 0
        for samples misclassified to begin with), ``success`` ``(B,)`` and extras
        ``step_norms`` ``(B,)`` and ``direction_norms`` ``(B, k)`` (per direction, min of both rays).
    """
    norm = canonical_norm(norm)
    check_minimal_options(x, directions, bisection_steps, scan_steps, subspace_dim, max_norm)
    check_int("batch_size", batch_size)
    low, high = float(bounds[0]), float(bounds[1])
    with model_guard(model), torch.no_grad():
        logits = prepare(model, x, y, ThreatModel(norm, 0.0, (low, high)))
        n, d = x.shape[0], x[0].numel()
        if max_norm is None:
            max_norm = (high - low) * {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]
        count = directions.shape[-x.dim()] if isinstance(directions, Tensor) else directions
        width = d * max(2 * count, subspace_dim or 1)  # elements held per sample
        parts = []
        for index in torch.arange(n, device=x.device).split(max(1, CHUNK_ELEMENTS // width)):
            given = directions[index] if isinstance(directions, Tensor) and directions.dim() > x.dim() else directions
            u = directions_of(x[index], given, norm, subspace_dim, generator)  # (b, k, d)
            parts.append(minimal_chunk(model, x[index], y[index], logits[index], u, norm,
                                       float(max_norm), scan_steps, bisection_steps, (low, high), batch_size))
        x_adv, norms, step_norms, direction_norms = (torch.cat(t) for t in zip(*parts))
        return AttackResult(x_adv, norms, torch.isfinite(norms), step_norms=step_norms,
                            direction_norms=direction_norms)


@dataclass
class NoiseRobustness:
    """Random-noise vs adversarial minimal perturbations, per sample and summarised."""

    norm: str
    dim: int
    subspace_dim: int | None
    random_norms: Tensor  # (N,) typical (median over directions) random flip distance
    adversarial_norms: Tensor  # (N,)
    ratio: Tensor  # (N,) random / adversarial (nan where either is missing)
    median_ratio: float
    predicted_ratio: float  # sqrt(d / m)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


def noise_robustness(model: nn.Module, x: Tensor, y: Tensor, adversarial_norms: Tensor, *,
                     norm: str = "l2", directions: int = 20, subspace_dim: int | None = None,
                     bounds: tuple[float, float] = (0.0, 1.0),
                     generator: torch.Generator | None = None) -> NoiseRobustness:
    """Ratio of the random-noise flip distance to the adversarial one, against ``sqrt(d/m)``.

    Without ``subspace_dim``: the flip distance along a random direction, the median over
    ``directions`` random unit directions (the typical direction), found by bisection with
    :func:`minimal_noise_norm` (prediction ``sqrt(d)``). With
    ``subspace_dim=m``: the minimal perturbation inside a random ``m``-dimensional subspace
    (:func:`subspace_minimal_norm`, the median over ``directions`` subspaces; prediction
    ``sqrt(d / m)``, Fawzi et al. 2016, Theorem 1). Failures count as inf.
    """
    per_draw = []
    for _ in range(directions):
        if subspace_dim is None:
            info = minimal_noise_norm(model, x, y, norm=norm, directions=1, bounds=bounds,
                                      generator=generator)
            found, norms = info.success, info.norm
        else:
            norms = subspace_minimal_norm(model, x, y, subspace_dim, bounds=bounds, generator=generator)
            found = torch.isfinite(norms)
        per_draw.append(torch.where(found, norms, torch.full_like(norms, float("inf"))))
    random_norms = torch.stack(per_draw).median(dim=0).values.cpu()
    adversarial = adversarial_norms.to(random_norms)
    valid = torch.isfinite(random_norms) & torch.isfinite(adversarial) & (adversarial > 0)
    ratio = torch.where(valid, random_norms / adversarial.clamp_min(1e-12), torch.full_like(adversarial, math.nan))
    dim = x[0].numel()
    return NoiseRobustness(
        norm=norm, dim=dim, subspace_dim=subspace_dim, random_norms=random_norms,
        adversarial_norms=adversarial, ratio=ratio,
        median_ratio=ratio[valid].median().item() if valid.any() else math.nan,
        predicted_ratio=math.sqrt(dim / (subspace_dim or dim)) if subspace_dim else math.sqrt(dim))


def subspace_minimal_norm(model: nn.Module, x: Tensor, y: Tensor, subspace_dim: int, *,
                          steps: int = 50, overshoot: float = 0.02,
                          bounds: tuple[float, float] = (0.0, 1.0),
                          generator: torch.Generator | None = None) -> Tensor:
    """L2 norm of the smallest perturbation found inside a random ``m``-dimensional subspace.

    DeepFool (Moosavi-Dezfooli et al. 2016) restricted to the span of ``m`` orthonormal random
    directions per sample (QR of a Gaussian ``d x m`` matrix): each step linearises the margin to
    the current runner-up class and moves along its gradient projected onto the subspace.
    Returns ``(N,)`` norms, ``inf`` where no flip was found in ``steps`` iterations.
    """
    n, d = len(x), x[0].numel()
    m = min(subspace_dim, d)
    gaussian = torch.randn(n, d, m, device=x.device, dtype=x.dtype, generator=generator)
    basis = torch.linalg.qr(gaussian).Q  # (N, d, m), orthonormal columns
    delta = torch.zeros(n, d, device=x.device, dtype=x.dtype)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    with model_guard(model):
        for _ in range(steps):
            x_adv = (x + ((1 + overshoot) * delta).reshape(x.shape)).clamp(*bounds)
            grad, f, logits = input_grad(model, x_adv, y, margin)
            done |= logits.argmax(dim=1) != y
            if bool(done.all()):
                break
            g = torch.einsum("ndm,nd->nm", basis, grad.reshape(n, -1))  # (N, m)
            g_full = torch.einsum("ndm,nm->nd", basis, g)  # (N, d) projected gradient
            step = -(f.clamp_min(0) + 1e-4)[:, None] / g.pow(2).sum(1, keepdim=True).clamp_min(1e-20) * g_full
            delta = torch.where(done[:, None], delta, delta + step)
    final = (x + ((1 + overshoot) * delta).reshape(x.shape)).clamp(*bounds)
    norms = lp_norm(final - x, "l2")
    with model_guard(model):
        fooled = predict(model, final).argmax(dim=1) != y
    return torch.where(fooled, norms, torch.full_like(norms, float("inf")))
