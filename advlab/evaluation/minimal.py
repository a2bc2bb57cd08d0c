"""Minimal adversarial perturbations and random-noise robustness.

* The distribution of minimal adversarial perturbations from a minimal-norm attack (DeepFool,
  Moosavi-Dezfooli et al. 2016; FMN, Pintor et al. 2021; C&W, Carlini & Wagner 2017), DeepFool's
  robustness metric ``rho_adv = mean ||r|| / ||x||`` and the accuracy-vs-eps curve they imply
  (a point with minimal perturbation ``r`` is broken at every ``eps >= ||r||``).
* Robustness to random noise (Fawzi, Moosavi-Dezfooli & Frossard 2016, "Robustness of
  classifiers: from adversarial to random noise"): along a random direction the label flips at a
  distance about ``sqrt(d)`` times (for an ``m``-dimensional random subspace, ``sqrt(d / m)``
  times) the adversarial distance, for classifiers whose boundary is locally flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import json_safe
from advlab.attacks._core import model_guard, predict
from advlab.threat import lp_norm


@dataclass
class MinimalNormStats:
    """Minimal adversarial perturbations of a set of points.

    ``norms``: ``(N,)`` -- 0 for points misclassified already, ``inf`` where the attack failed.
    ``curve``: ``[(eps, accuracy)]`` implied by the norms.
    """

    attack: str
    norm: str
    norms: Tensor
    rho_adv: float
    median: float
    success_rate: float
    clean_accuracy: float
    curve: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


def accuracy_at(norms: Tensor, eps: Sequence[float]) -> list[float]:
    """Accuracy implied by minimal norms: the fraction of points with ``norm > eps``."""
    return [(norms > e).float().mean().item() for e in eps]


def _run_minimal(attack: str, model: nn.Module, x: Tensor, y: Tensor, norm: str, bounds,
                 generator, options: dict) -> Tensor:
    from advlab.attacks.registry import ATTACK_KINDS, get_attack

    if ATTACK_KINDS.get(attack.replace("-", "_")) != "minimal":
        raise ValueError(f"{attack!r} is not a minimal-norm attack; use deepfool, fmn or cw")
    fn = get_attack(attack)
    info = fn(model, x, y, norm=norm, bounds=bounds, generator=generator, return_info=True, **options)
    return torch.where(info.success, info.norms, torch.full_like(info.norms, float("inf")))


def minimal_norm_statistics(model: nn.Module, x: Tensor, y: Tensor, *, attack: str = "fmn",
                            norm: str = "l2", eps: Sequence[float] | None = None,
                            bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
                            generator: torch.Generator | None = None,
                            **options: Any) -> MinimalNormStats:
    """Run a minimal-norm attack on correctly classified points of ``x`` ``(N, ...)``.

    ``rho_adv`` averages ``||r|| / ||x||`` over the successfully attacked correct points
    (DeepFool's definition). ``eps`` sets the points of the implied accuracy curve (default: 20
    values up to the 95th percentile of the norms).
    """
    with model_guard(model):
        correct = predict(model, x).argmax(dim=1) == y
    norms = torch.zeros(len(x), device=x.device)
    index = correct.nonzero().squeeze(1)
    for chunk in index.split(batch_size):
        norms[chunk] = _run_minimal(attack, model, x[chunk], y[chunk], norm, bounds, generator, options)
    found = correct & torch.isfinite(norms)
    ratio = norms[found] / lp_norm(x[found], norm).clamp_min(1e-12)
    if eps is None:
        top = norms[found].quantile(0.95).item() if found.any() else 1.0
        eps = [top * k / 19 for k in range(20)]
    return MinimalNormStats(
        attack=attack, norm=norm, norms=norms.cpu(),
        rho_adv=ratio.mean().item() if found.any() else math.nan,
        median=norms[correct].median().item() if correct.any() else math.nan,
        success_rate=(found.sum() / correct.sum().clamp_min(1)).item(),
        clean_accuracy=correct.float().mean().item(),
        curve=list(zip(eps, accuracy_at(norms.cpu(), eps))))


def cross_check(stats: MinimalNormStats, results: Sequence[Any], tolerance: float = 0.0) -> list[dict[str, Any]]:
    """Compare the ensemble's robust accuracy with the accuracy implied by minimal norms.

    A minimal-norm attack finds real adversarial examples, so the accuracy it implies is an upper
    bound of the true robust accuracy, like the ensemble's. Where the implied accuracy is *lower*
    than the ensemble's, the ensemble missed points (``missed > 0``); normally the ensemble is the
    lower (stronger) of the two.
    """
    rows = []
    for r in results:
        implied = accuracy_at(stats.norms, [r.eps])[0]
        missed = int(((stats.norms <= r.eps) & r.robust_correct).sum())
        rows.append({"eps": r.eps, "ensemble": r.robust_accuracy, "minimal_norm": implied,
                     "missed_by_ensemble": missed, "consistent": r.robust_accuracy <= implied + tolerance})
    return rows


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
    :func:`advlab.attacks.noise.minimal_noise_norm` (prediction ``sqrt(d)``). With
    ``subspace_dim=m``: the minimal perturbation inside a random ``m``-dimensional subspace
    (:func:`subspace_minimal_norm`, the median over ``directions`` subspaces; prediction
    ``sqrt(d / m)``, Fawzi et al. 2016, Theorem 1). Failures count as inf.
    """
    from advlab.attacks.noise import minimal_noise_norm

    per_draw = []
    for _ in range(directions):
        if subspace_dim is None:
            info = minimal_noise_norm(model, x, y, norm=norm, directions=1, bounds=bounds,
                                      generator=generator)
            found, norms = info.success, info.norms
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
    from advlab.attacks._core import input_grad
    from advlab.attacks.losses import margin

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
