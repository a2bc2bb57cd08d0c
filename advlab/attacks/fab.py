"""FAB: the Fast Adaptive Boundary attack (Croce & Hein 2020, ICML), untargeted and targeted.

Croce & Hein (2020), "Minimally distorted adversarial examples with a fast adaptive boundary
attack". FAB looks for the adversarial point closest to ``x_orig`` by walking to the linearised
decision boundary. At the current point ``x_k`` it takes a logit difference ``g = z_t - z_r``
(negative while ``x_k`` is on the wrong side) and its input gradient ``w``, so that the boundary
is approximated by the hyperplane ``{z : g + w . (z - x_k) = 0}``; then

1. ``d_k`` = the minimal-norm step from ``x_k`` onto that hyperplane inside the box, and
   ``d_0`` = the same from ``x_orig`` (:func:`advlab.attacks._hyperplane.hyperplane_step`);
2. ``alpha = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max)`` biases the step towards
   ``x_orig`` when ``x_k`` is far from the boundary compared with ``x_orig``;
3. ``x_{k+1} = clip((1 - alpha)(x_k + eta d_k) + alpha (x_orig + eta d_0))`` (``eta`` > 1
   overshoots the linearisation);
4. if ``x_{k+1}`` is adversarial it is recorded when smaller than the best so far, and the
   backward step ``x_{k+1} = x_orig + beta (x_{k+1} - x_orig)`` pulls it back towards ``x_orig``.

Which logit difference: untargeted (``target=None``) the class ``t != y`` whose linearised
boundary is nearest, ``|z_t - z_y| / ||grad (z_t - z_y)||_dual`` (one backward pass per class);
targeted (``target`` a ``(B,)`` tensor) the target against the strongest other class, success
``pred == target``; ``target="top"`` is AutoAttack's FAB-T (Croce & Hein 2020, "Reliable
evaluation ..."): one run per class among the ``n_target_classes`` most likely wrong classes at
``x`` with ``g = z_t - z_y`` (one backward pass per step) and untargeted success ``pred != y``.

Restarts after the first start at ``x_orig + u``, ``u`` a random perturbation of norm
``min(best norm, eps) / 2`` (uniform direction in Linf, Gaussian in L2 and L1). As a bounded
attack FAB returns the smallest adversarial point found when it lies in the threat model (the
projection of that point onto the threat set otherwise, or ``x`` when nothing was found); the
minimal norms found are ``extras["min_norm"]`` with ``return_info=True``. Shapes: ``x`` ``(B, ...)``,
per-sample quantities ``(B,)``; the geometry works on rows ``(B, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab import streams
from advlab._checks import check_int, check_number
from advlab.attacks._core import (
    AttackInputError,
    finalize,
    model_guard,
    prepare,
    reached,
    reject_targeted,
)
from advlab.attacks._hyperplane import hyperplane_step
from advlab.attacks._iterate import PassCount, SmallestAdversarial
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, bounded_result
from advlab.streams import Randomness
from advlab.threat import ThreatModel, flat, lp_norm, per_sample_view

_DUAL = {"l2": "l2", "linf": "l1", "l1": "linf"}


@dataclass(frozen=True)
class _Config:
    model: nn.Module
    threat: ThreatModel
    steps: int
    alpha_max: float
    eta: float
    beta: float
    early_stop: bool
    count: PassCount
    generator: Randomness


def _targeted_plane(cfg: _Config, x1: Tensor, y: Tensor, target: Tensor, rival_y: bool,
                    rows: Tensor) -> tuple[Tensor, Tensor]:
    """``g = z_t - z_r`` ``(A,)`` and its gradient ``(A, D)``; ``r = y`` or the strongest non-target."""
    with torch.enable_grad():
        x_req = x1.detach().requires_grad_(True)
        logits = cfg.model(x_req)
        if rival_y:
            rival = y
        else:
            rival = logits.detach().scatter(1, target[:, None], -math.inf).argmax(dim=1)
        g = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, rival[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(g.sum(), x_req)
    cfg.count.add(rows)
    return g.detach(), flat(grad)


def _nearest_plane(cfg: _Config, x1: Tensor, y: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Untargeted: the class difference with the nearest linearised boundary, ``(A,)``, ``(A, D)``."""
    with torch.enable_grad():
        x_req = x1.detach().requires_grad_(True)
        logits = cfg.model(x_req)
        grads = [torch.autograd.grad(logits[:, k].sum(), x_req, retain_graph=k + 1 < logits.shape[1])[0]
                 for k in range(logits.shape[1])]
    cfg.count.add(rows, logits.shape[1])
    jac = torch.stack([flat(g) for g in grads], dim=1)  # (A, K, D)
    rows_a = torch.arange(len(y), device=y.device)
    diff = logits.detach() - logits.detach()[rows_a, y][:, None]  # (A, K)
    normal = jac - jac[rows_a, y][:, None]
    dist = diff.abs() / (lp_norm(normal.flatten(0, 1), _DUAL[cfg.threat.norm]).view_as(diff) + 1e-12)
    dist[rows_a, y] = math.inf
    k = dist.argmin(dim=1)
    return diff[rows_a, k], normal[rows_a, k]


def _step(cfg: _Config, x0: Tensor, x1: Tensor, g: Tensor, w: Tensor) -> Tensor:
    """One FAB update on rows ``(A, D)``: biased projection onto the linearised boundary."""
    bounds, norm = cfg.threat.bounds, cfg.threat.norm
    d1 = hyperplane_step(x1, w, -g, norm, bounds)
    d0 = hyperplane_step(x0, w, -g - (w * (x0 - x1)).sum(dim=1), norm, bounds)
    n1, n0 = lp_norm(d1, norm).clamp_min(1e-8), lp_norm(d0, norm).clamp_min(1e-8)
    alpha = (n1 / (n1 + n0)).clamp(0.0, cfg.alpha_max)[:, None]
    return ((1 - alpha) * (x1 + cfg.eta * d1) + alpha * (x0 + cfg.eta * d0)).clamp(*bounds)


def _random_start(cfg: _Config, x0: Tensor, radius: Tensor, index: Tensor) -> Tensor:
    """``x0`` (rows ``index`` of the batch) plus a random perturbation of norm ``radius``
    ``(A,)``, clipped: ``(A, D)``."""
    norm, gen = cfg.threat.norm, streams.for_rows(cfg.generator, index)
    kw = {"device": x0.device, "dtype": x0.dtype}
    if norm == "linf":
        u = streams.rand(tuple(x0.shape), gen, **kw) * 2 - 1
    else:
        u = streams.randn(tuple(x0.shape), gen, **kw)
    u = u / lp_norm(u, norm).clamp_min(1e-12)[:, None]
    return (x0 + radius[:, None] * u).clamp(*cfg.threat.bounds)


def _run(cfg: _Config, best: SmallestAdversarial, shape: tuple[int, ...], x: Tensor, y: Tensor,
         goal: Tensor | None, targeted: bool, index: Tensor, start: Tensor) -> None:
    """One FAB run on the samples ``index`` ``(A,)`` (rows of ``x`` ``(B, D)``) from ``start`` ``(A, D)``.

    ``goal`` ``(B,)``: the class of the plane (None: untargeted); ``targeted``: success is reaching it.
    """
    eps = cfg.threat.eps_per_sample(x)
    x0, x1 = x[index], start
    for _ in range(cfg.steps):
        if cfg.early_stop:
            keep = ~(best.norm[index] <= eps[index])
            if not bool(keep.all()):
                index, x0, x1 = index[keep], x0[keep], x1[keep]
        if index.numel() == 0:
            return
        if goal is None:
            g, w = _nearest_plane(cfg, x1.view(-1, *shape), y[index], index)
        else:
            g, w = _targeted_plane(cfg, x1.view(-1, *shape), y[index], goal[index], not targeted, index)
        x1 = _step(cfg, x0, x1, g, w)
        with torch.no_grad():
            logits = cfg.model(x1.view(-1, *shape))
        cfg.count.add(index)
        success = reached(logits, goal[index] if targeted else y[index], targeted=targeted)
        best.update(x1, lp_norm(x1 - x0, cfg.threat.norm), success, index)
        x1 = torch.where(success[:, None], x0 + cfg.beta * (x1 - x0), x1)


def _runs(cfg: _Config, best: SmallestAdversarial, shape: tuple[int, ...], x: Tensor, y: Tensor,
          goal: Tensor | None, targeted: bool, restarts: int) -> None:
    eps = cfg.threat.eps_per_sample(x)
    for restart in range(restarts):
        todo = ~(best.norm <= eps) if cfg.early_stop else torch.ones_like(best.norm, dtype=torch.bool)
        index = todo.nonzero().squeeze(1)
        if index.numel() == 0:
            return
        start = x[index]
        if restart > 0:
            start = _random_start(cfg, start, torch.minimum(best.norm[index], eps[index]) / 2, index)
        _run(cfg, best, shape, x, y, goal, targeted, index, start)


def _sweep(cfg: _Config, best: SmallestAdversarial, shape: tuple[int, ...], x: Tensor, y: Tensor,
           ranked: Tensor, restarts: int, patience: int | None) -> None:
    """FAB-T: one run per target rank (columns of ``ranked`` ``(B, T)``), on what is left."""
    eps, idle = cfg.threat.eps_per_sample(x), 0
    for rank in range(ranked.shape[1]):
        before = int((best.norm <= eps).sum())
        _runs(cfg, best, shape, x, y, ranked[:, rank], False, restarts)
        idle = 0 if int((best.norm <= eps).sum()) > before else idle + 1
        if patience is not None and idle >= patience:
            return


def _check(threat: ThreatModel, target: Tensor | str | None) -> None:
    if threat.norm not in _DUAL:
        raise ValueError(f"fab supports the linf, l2 and l1 threat models, got {threat.norm!r}")
    if not (target is None or isinstance(target, Tensor) or target == "top"):
        raise AttackInputError(f"target must be None, a (B,) tensor of classes or 'top', got {target!r}")


@register_attack("fab", kind="bounded")
@reject_targeted
def fab(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, steps: int = 100,
        restarts: int = 1, target: Tensor | str | None = None, n_target_classes: int = 9,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, early_stop: bool = True,
        target_patience: int | None = None, generator: Randomness = None, return_info: bool = False) -> Tensor | AttackResult:
    """FAB (Croce & Hein 2020): minimal-norm boundary steps, kept when inside ``threat``.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: clean inputs ``(B, ...)``; y: the true labels ``(B,)``.
        threat: ``linf``, ``l2`` or ``l1`` threat model (``eps`` float or ``(B,)``); ``eps`` scales
            the random restarts and decides what is returned.
        steps: iterations per run (default 100; one gradient and one forward pass each, ``K``
            gradient passes untargeted).
        restarts: runs per sample (per target class with ``"top"``); the first from ``x``.
        target: ``None`` (untargeted), ``(B,)`` classes to reach, or ``"top"`` (FAB-T above).
        n_target_classes: target classes of the ``"top"`` sweep (default 9, AutoAttack's; at
            most ``K - 1`` are used).
        alpha_max, eta, beta: the paper's bias bound, overshoot and backward step (0.1, 1.05, 0.9).
        early_stop: stop on a sample once its smallest adversarial lies within ``eps`` (default
            True; False keeps minimising the norm).
        target_patience: ``"top"`` only: stop after this many consecutive target ranks brought
            no new point within ``eps`` (default None: every rank, as AutoAttack).
        generator: randomness of the restarts; same seed -> identical result.
        return_info: return an :class:`~advlab.attacks.result.AttackResult`
            (``extras["min_norm"]``: ``(B,)`` smallest adversarial norm found, ``inf`` if none;
            ``gradients``: model passes per sample, the clean one excluded: per step one gradient
            pass (``K`` untargeted) and one forward pass).

    Returns:
        ``x_adv`` ``(B, ...)`` inside the threat model and the bounds.
    """
    check_int("steps", steps)
    check_int("restarts", restarts)
    check_int("n_target_classes", n_target_classes)
    if target_patience is not None:
        check_int("target_patience", target_patience)
    for name, value in (("alpha_max", alpha_max), ("eta", eta), ("beta", beta)):
        check_number(name, value)
    _check(threat, target)
    explicit = target if isinstance(target, Tensor) else None
    count = PassCount(x, return_info)
    with model_guard(model):
        clean = prepare(model, x, y, threat, target=explicit)
        cfg = _Config(model, threat, steps, float(alpha_max), float(eta), float(beta), early_stop,
                      count, generator)
        shape, rows = tuple(x.shape[1:]), flat(x.detach())
        best = SmallestAdversarial.start(rows, reached(clean, y if explicit is None else explicit,
                                                       targeted=explicit is not None))
        if target == "top":
            ranks = min(n_target_classes, clean.shape[1] - 1)
            ranked = clean.scatter(1, y[:, None], -math.inf).topk(ranks, dim=1).indices
            _sweep(cfg, best, shape, rows, y, ranked, restarts, target_patience)
        else:
            _runs(cfg, best, shape, rows, y, explicit, explicit is not None, restarts)
        found = per_sample_view(best.found(), best.x)
        x_adv = finalize(x, torch.where(found, best.x, rows).view_as(x), threat)
    if not return_info:
        return x_adv
    return bounded_result(model, x, y, x_adv, threat, target=explicit, gradients=count.counts,
                          min_norm=best.norm)


__all__ = ["fab"]
