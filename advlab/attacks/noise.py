"""Random noise: perturbations of a given norm, the random-noise attack baseline, and the minimal
norm of random noise that flips a prediction (random versus adversarial robustness).

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

from advlab.attacks._core import (
    check_inputs,
    finalize,
    is_adversarial,
    model_guard,
    predict,
    prepare,
)
from advlab.attacks._iterate import BestIterate, PassCount, check_count
from advlab.attacks.losses import LossFn, get_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, MinimalNormResult, bounded_result
from advlab.threat import Eps, ThreatModel, canonical_norm, lp_norm

DISTRIBUTIONS = ("gaussian", "sphere", "cube", "ball")


def unit_sphere(n: int, d: int, norm: str, *, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` points drawn uniformly from the unit Lp sphere in ``d`` dimensions: ``(n, d)``.

    L2: a normalised Gaussian. Linf (the surface of the cube): a uniform point of the cube with one
    random coordinate pushed to ``+-1`` (every face has the same area). L1: normalised
    exponentials (uniform on the simplex) with random signs.
    """
    norm = canonical_norm(norm)
    kw: dict[str, Any] = {"generator": generator, "device": device, "dtype": dtype}
    if norm == "l2":
        g = torch.randn(n, d, **kw)
        return g / lp_norm(g, "l2").clamp_min(1e-12)[:, None]
    signs = torch.randint(0, 2, (n, d), generator=generator, device=device).to(dtype) * 2 - 1
    if norm == "linf":
        u = torch.rand(n, d, **kw) * 2 - 1
        face = torch.randint(0, d, (n, 1), generator=generator, device=device)
        return u.scatter(1, face, signs.gather(1, face))
    expo = -torch.rand(n, d, **kw).clamp_min(1e-12).log()
    return expo / expo.sum(dim=1, keepdim=True) * signs


def random_noise(x: Tensor, norm: str = "l2", eps: Eps = 1.0, *, distribution: str = "gaussian",
                 bounds: tuple[float, float] = (0.0, 1.0),
                 generator: torch.Generator | None = None) -> Tensor:
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
        return threat.random_init(x, generator)
    n, d = x.shape[0], x[0].numel()
    eps_col = threat.eps_per_sample(x)[:, None]  # (B, 1)
    kw: dict[str, Any] = {"generator": generator, "device": x.device, "dtype": x.dtype}
    if distribution == "cube":
        delta = (torch.rand(n, d, **kw) * 2 - 1) * eps_col
    elif distribution == "gaussian":
        g = torch.randn(n, d, **kw)
        delta = g / lp_norm(g, threat.norm).clamp_min(1e-12)[:, None] * eps_col
    else:
        delta = unit_sphere(n, d, threat.norm, **kw) * eps_col
    return threat.clip(x + delta.reshape(x.shape))


@register_attack("noise", kind="bounded")
def noise(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, samples: int = 10,
          distribution: str = "sphere", loss: str | LossFn = "ce",
          generator: torch.Generator | None = None, return_info: bool = False) -> Tensor | AttackResult:
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
    check_count("samples", samples)
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
                                 bounds=threat.bounds, generator=generator)
            logits = model(x_new)
            count.add(active)
            best.update(active, x_new, loss_fn(logits, y[active]), is_adversarial(logits, y[active]))
        x_adv = finalize(x, best.x, threat)
        if not return_info:
            return x_adv
        return bounded_result(model, x, y, x_adv, threat, queries=count.counts)


def _directions(x: Tensor, directions: int | Tensor, norm: str, subspace_dim: int | None,
                generator: torch.Generator | None) -> Tensor:
    """Unit-Lp directions ``(n, k, d)``: given, uniform on the sphere, or in a random subspace."""
    n, d = x.shape[0], x[0].numel()
    if isinstance(directions, Tensor):
        u = directions.to(device=x.device, dtype=x.dtype)
        u = u.reshape(-1, d).expand(n, -1, -1) if u.dim() == x.dim() else u.reshape(n, -1, d)
    elif subspace_dim is None:
        u = unit_sphere(n * directions, d, norm, generator=generator, device=x.device,
                        dtype=x.dtype).reshape(n, directions, d)
    else:
        # an orthonormal basis of a random m-dim subspace per sample (QR of a Gaussian d x m),
        # then Gaussian coefficients: uniform directions on the unit sphere of the subspace
        kw: dict[str, Any] = {"generator": generator, "device": x.device, "dtype": x.dtype}
        basis, _ = torch.linalg.qr(torch.randn(n, d, subspace_dim, **kw))  # (n, d, m)
        u = (basis @ torch.randn(n, subspace_dim, directions, **kw)).transpose(1, 2)  # (n, k, d)
    return u / lp_norm(u.reshape(-1, d), norm).clamp_min(1e-12).reshape(n, -1, 1)


def _flip_distances(model: nn.Module, x: Tensor, y: Tensor, rays: Tensor, max_norm: float,
                    scan_steps: int, bisection_steps: int, bounds: tuple[float, float],
                    batch_size: int) -> Tensor:
    """Smallest ``t`` in ``(0, max_norm]`` with ``f(clip(x + t u)) != y`` per ray ``u``: ``(n, r)``.

    A scan of ``scan_steps`` evenly spaced points finds the first flipped one; bisection then
    narrows the bracket. ``inf`` where no scan point flips. Rays: ``(n, r, d)``.
    """
    n, r, d = rays.shape
    origin = x.reshape(n, 1, d).expand(n, r, d).reshape(n * r, d)
    u = rays.reshape(n * r, d)
    labels = y.repeat_interleave(r)

    def flipped(index: Tensor, t: Tensor) -> Tensor:
        points = (origin[index] + t[:, None] * u[index]).clamp(*bounds)
        return predict(model, points.reshape(-1, *x.shape[1:]), batch_size).argmax(dim=1) != labels[index]

    lower = torch.zeros(n * r, dtype=x.dtype, device=x.device)
    upper = torch.full_like(lower, math.inf)
    pending = torch.arange(n * r, device=x.device)
    for k in range(1, scan_steps + 1):
        if pending.numel() == 0:
            break
        hit = flipped(pending, torch.full((pending.numel(),), max_norm * k / scan_steps, dtype=x.dtype,
                                          device=x.device))
        upper[pending[hit]] = max_norm * k / scan_steps
        lower[pending[hit]] = max_norm * (k - 1) / scan_steps
        pending = pending[~hit]
    found = torch.isfinite(upper).nonzero().squeeze(1)
    low, high = lower[found], upper[found]
    for _ in range(bisection_steps):
        if found.numel() == 0:
            break
        mid = (low + high) / 2
        hit = flipped(found, mid)
        high, low = torch.where(hit, mid, high), torch.where(hit, low, mid)
    upper[found] = high
    return upper.reshape(n, r)


def _check_minimal_options(x: Tensor, directions: int | Tensor, bisection_steps: int, scan_steps: int,
                           subspace_dim: int | None, max_norm: float | None) -> None:
    if not isinstance(directions, Tensor):
        check_count("directions", directions)
    check_count("scan_steps", scan_steps)
    if isinstance(bisection_steps, bool) or not isinstance(bisection_steps, int) or bisection_steps < 0:
        raise ValueError(f"bisection_steps must be an integer >= 0, got {bisection_steps!r}")
    d = x[0].numel() if x.dim() >= 2 else 0
    if subspace_dim is not None and (not isinstance(subspace_dim, int) or not 1 <= subspace_dim <= d):
        raise ValueError(f"subspace_dim must be an integer in [1, {d}] (the input dimension), got {subspace_dim!r}")
    if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")


def minimal_noise_norm(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "l2",
                       directions: int | Tensor = 10, max_norm: float | None = None,
                       bisection_steps: int = 20, scan_steps: int = 8, subspace_dim: int | None = None,
                       bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 8192,
                       generator: torch.Generator | None = None) -> MinimalNormResult:
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
        :class:`MinimalNormResult`: ``x_adv`` (the flipped point of the best direction, ``x`` where
        none flipped), ``norms`` ``(B,)`` (``inf`` where no direction flips within ``max_norm``, 0
        for samples misclassified to begin with), ``success`` ``(B,)`` and extras
        ``step_norms`` ``(B,)`` and ``direction_norms`` ``(B, k)`` (per direction, min of both rays).
    """
    norm = canonical_norm(norm)
    _check_minimal_options(x, directions, bisection_steps, scan_steps, subspace_dim, max_norm)
    check_count("batch_size", batch_size)
    low, high = float(bounds[0]), float(bounds[1])
    with model_guard(model), torch.no_grad():
        logits = prepare(model, x, y, ThreatModel(norm, 0.0, (low, high)))
        n, d = x.shape[0], x[0].numel()
        if max_norm is None:
            max_norm = (high - low) * {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]
        count = directions.shape[-x.dim()] if isinstance(directions, Tensor) else directions
        width = d * max(2 * count, subspace_dim or 1)  # elements held per sample
        parts = []
        for index in torch.arange(n, device=x.device).split(max(1, _CHUNK_ELEMENTS // width)):
            given = directions[index] if isinstance(directions, Tensor) and directions.dim() > x.dim() else directions
            u = _directions(x[index], given, norm, subspace_dim, generator)  # (b, k, d)
            parts.append(_minimal_chunk(model, x[index], y[index], logits[index], u, norm,
                                        float(max_norm), scan_steps, bisection_steps, (low, high), batch_size))
        x_adv, norms, step_norms, direction_norms = (torch.cat(t) for t in zip(*parts))
        return MinimalNormResult(x_adv, norms, torch.isfinite(norms), step_norms=step_norms,
                                 direction_norms=direction_norms)


_CHUNK_ELEMENTS = 2 ** 24  # samples are processed in chunks holding about this many numbers


def _minimal_chunk(model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, u: Tensor, norm: str,
                   max_norm: float, scan_steps: int, bisection_steps: int, bounds: tuple[float, float],
                   batch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`minimal_noise_norm` on samples ``x`` ``(b, ...)`` with unit directions ``u`` ``(b, k, d)``."""
    n, k, d = u.shape
    rays = torch.cat([u, -u], dim=1)  # (b, 2k, d): both rays of every line
    steps = torch.zeros(n, 2 * k, dtype=x.dtype, device=x.device)  # 0 where misclassified already
    todo = (~is_adversarial(logits, y)).nonzero().squeeze(1)
    if todo.numel():
        steps[todo] = _flip_distances(model, x[todo], y[todo], rays[todo], max_norm, scan_steps,
                                      bisection_steps, bounds, batch_size)
    finite = torch.isfinite(steps)
    origin = x.reshape(n, 1, d)
    points = (origin + torch.where(finite, steps, 0.0)[..., None] * rays).clamp(*bounds)  # (b, 2k, d)
    applied = lp_norm((points - origin).reshape(-1, d), norm).reshape(n, 2 * k)
    dist = torch.where(finite, applied, math.inf)  # (b, 2k)
    norms, best = dist.min(dim=1)
    rows = torch.arange(n, device=x.device)
    x_adv = torch.where(torch.isfinite(norms)[:, None], points[rows, best], x.reshape(n, d))
    return x_adv.reshape(x.shape), norms, steps[rows, best], torch.minimum(dist[:, :k], dist[:, k:])


__all__ = ["DISTRIBUTIONS", "minimal_noise_norm", "noise", "random_noise", "unit_sphere"]
