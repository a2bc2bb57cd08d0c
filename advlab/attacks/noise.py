"""Random noise: perturbations of a given norm and the random-noise attack baseline.

The measurement of random-noise robustness (the minimal norm of random noise that flips a
prediction, :func:`~advlab.evaluation.noise.minimal_noise_norm`) lives in
:mod:`advlab.evaluation.noise` (it was ``advlab.attacks.minimal_noise_norm`` in 0.1).

Fawzi, Moosavi-Dezfooli & Frossard (2016), "Robustness of classifiers: from adversarial to random
noise" (NeurIPS): for a classifier whose decision boundary is locally flat, the minimal
perturbation ``r_S`` restricted to a random subspace ``S`` of dimension ``m`` satisfies, with high
probability, ``zeta_1(m, delta) * sqrt(d/m) * ||r*|| <= ||r_S|| <= zeta_2(m, delta) * sqrt(d/m) *
||r*||`` where ``r*`` is the minimal (adversarial) perturbation, ``d`` the input dimension and
``zeta_1, zeta_2`` depend only on ``m`` and the failure probability ``delta`` (they tend to 1 as
``m`` grows). For ``m = 1`` (a random line: random noise) the ratio is of order ``sqrt(d)``; for
``m = d`` it is 1 (the adversarial regime). For curved boundaries the paper bounds the deviation
by the curvature. For a linear binary classifier ``f(x) = w.x + b`` the exact values are
``||r*|| = |f(x)| / ||w||`` and ``||r_S|| = |f(x)| / ||P_S w||``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advlab import streams
from advlab._checks import check_int
from advlab.attacks._core import (
    check_inputs,
    finalize,
    is_adversarial,
    model_guard,
    prepare,
)
from advlab.attacks._iterate import BestIterate, PassCount
from advlab.attacks.losses import LossFn, get_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, bounded_result
from advlab.streams import Randomness
from advlab.threat import Eps, ThreatModel, canonical_norm, lp_norm

DISTRIBUTIONS = ("gaussian", "sphere", "cube", "ball")


def unit_sphere(n: int, d: int, norm: str, *, generator: Randomness = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` points drawn uniformly from the unit Lp sphere in ``d`` dimensions: ``(n, d)``.

    L2: a normalised Gaussian. Linf (the surface of the cube): a uniform point of the cube with one
    random coordinate pushed to ``+-1`` (every face has the same area). L1: normalised
    exponentials (uniform on the simplex) with random signs.
    """
    norm = canonical_norm(norm)
    kw: dict[str, Any] = {"device": device, "dtype": dtype}
    if norm == "l2":
        g = streams.randn((n, d), generator, **kw)
        return g / lp_norm(g, "l2").clamp_min(1e-12)[:, None]
    signs = streams.randint(2, (n, d), generator, device=device).to(dtype) * 2 - 1
    if norm == "linf":
        u = streams.rand((n, d), generator, **kw) * 2 - 1
        face = streams.randint(d, (n, 1), generator, device=device)
        return u.scatter(1, face, signs.gather(1, face))
    expo = -streams.rand((n, d), generator, **kw).clamp_min(1e-12).log()
    return expo / expo.sum(dim=1, keepdim=True) * signs


def random_noise(x: Tensor, norm: str = "l2", eps: Eps = 1.0, *, distribution: str = "gaussian",
                 bounds: tuple[float, float] = (0.0, 1.0),
                 generator: Randomness = None) -> Tensor:
    """``clip(x + delta)`` for a random ``delta`` of Lp norm ``eps`` (per sample).

    Args:
        x: inputs ``(B, ...)`` in ``bounds``.
        norm: ``"l2"`` (default), ``"linf"`` or ``"l1"``.
        eps: float or ``(B,)`` radius.
        distribution: ``"gaussian"``: a Gaussian direction scaled to norm ``eps`` (for ``l2`` the
            same law as ``"sphere"``); ``"sphere"``: uniform on the Lp sphere of radius ``eps``;
            ``"cube"``: uniform in the Linf cube ``[-eps, eps]^d`` (needs ``norm="linf"``);
            ``"ball"``: uniform in the Lp ball (:meth:`ThreatModel.random_init`).
        bounds: the valid input box; the result is clipped into it, so near the bounds the
            perturbation actually applied is shorter than ``eps``.
        generator: randomness.

    Returns:
        ``(B, ...)`` noisy inputs in ``bounds``.
    """
    threat = ThreatModel(norm, eps, bounds)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if distribution == "cube" and threat.norm != "linf":
        raise ValueError("distribution='cube' samples the Linf cube; use norm='linf', or 'ball'/'sphere' for "
                         f"the {threat.norm} ball")
    check_inputs(x, bounds=threat.bounds)
    if distribution == "ball":
        return threat.random_init(x, generator=generator)
    n, d = x.shape[0], x[0].numel()
    eps_col = threat.eps_per_sample(x)[:, None]  # (B, 1)
    kw: dict[str, Any] = {"device": x.device, "dtype": x.dtype}
    if distribution == "cube":
        delta = (streams.rand((n, d), generator, **kw) * 2 - 1) * eps_col
    elif distribution == "gaussian":
        g = streams.randn((n, d), generator, **kw)
        delta = g / lp_norm(g, threat.norm).clamp_min(1e-12)[:, None] * eps_col
    else:
        delta = unit_sphere(n, d, threat.norm, generator=generator, **kw) * eps_col
    return threat.clip(x + delta.reshape(x.shape))


@register_attack("noise", kind="bounded")
def noise(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, samples: int = 10,
          distribution: str = "sphere", loss: str | LossFn = "ce",
          generator: Randomness = None, return_info: bool = False) -> Tensor | AttackResult:
    """Random-noise baseline: the best of ``samples`` random perturbations of norm ``eps``.

    A sanity check for evaluations (an attack weaker than random noise is broken) and the
    random-noise regime of Fawzi et al. (2016). Only still-correct samples draw new noise.

    Args:
        model: classifier returning logits ``(B, K)``; x: ``(B, ...)``; y: labels ``(B,)``.
        threat: the threat model (norm, ``eps`` float or ``(B,)``, bounds).
        samples: draws per sample (default 10); each costs one forward pass.
        distribution: see :func:`random_noise` (default ``"sphere"``: on the threat's sphere).
        loss: the score of a draw when none fools the model (default ``"ce"``).
        generator: randomness.
        return_info: return an :class:`~advlab.attacks.result.AttackResult` whose ``queries``
            count the forward passes per sample (the clean one included).

    Returns:
        ``x_adv`` ``(B, ...)`` in the threat model: per sample the first misclassifying draw, else
        the draw of highest loss (``x`` itself where it is misclassified to begin with).
    """
    check_int("samples", samples)
    loss_fn = get_loss(loss)
    count = PassCount(x, return_info)
    with model_guard(model), torch.no_grad():
        logits = prepare(model, x, y, threat)
        count.add()
        eps = threat.eps_per_sample(x)  # (B,)
        # score -inf: a still-correct sample always ends on one of its draws
        best = BestIterate.start(x, torch.full_like(eps, -math.inf), is_adversarial(logits, y))
        for _ in range(samples):
            active = best.remaining()
            if active.numel() == 0:
                break
            x_new = random_noise(x[active], threat.norm, eps[active], distribution=distribution,
                                 bounds=threat.bounds, generator=streams.for_rows(generator, active))
            logits = model(x_new)
            count.add(active)
            best.update(active, x_new, loss_fn(logits, y[active]), is_adversarial(logits, y[active]))
        x_adv = finalize(x, best.x, threat)
        if not return_info:
            return x_adv
        return bounded_result(model, x, y, x_adv, threat, queries=count.counts)


__all__ = ["DISTRIBUTIONS", "noise", "random_noise", "unit_sphere"]
