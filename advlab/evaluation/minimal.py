"""Minimal adversarial perturbations.

* The distribution of minimal adversarial perturbations from a minimal-norm attack (DeepFool,
  Moosavi-Dezfooli et al. 2016; FMN, Pintor et al. 2021; C&W, Carlini & Wagner 2017), DeepFool's
  robustness metric ``rho_adv = mean ||r|| / ||x||`` and the accuracy-vs-eps curve they imply
  (a point with minimal perturbation ``r`` is broken at every ``eps >= ||r||``).

Random-noise robustness (``noise_robustness``, ``subspace_minimal_norm``, ``NoiseRobustness``)
moved to :mod:`advlab.evaluation.noise`; the names are still importable from here.
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
from advlab.evaluation.noise import (  # noqa: F401  (their old home)
    NoiseRobustness,
    noise_robustness,
    subspace_minimal_norm,
)
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
    return torch.where(info.success, info.norm, torch.full_like(info.norm, float("inf")))


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
