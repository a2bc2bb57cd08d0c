"""Threat models: the set of allowed perturbations, passed to every attack as an object.

A :class:`ThreatModel` is the ``eps``-ball of an Lp norm (``linf``, ``l2`` or ``l1``) around each
input, intersected with the box of valid inputs ``bounds``. It knows how to measure a
perturbation (:meth:`distance`), test membership (:meth:`contains`), map any point back into the
set (:meth:`project`), draw a uniform random start (:meth:`random_init`) and turn a gradient into
the steepest-ascent direction of unit norm (:meth:`ascent_direction`). Attacks are written once
against this interface instead of once per norm (the design of foolbox's
``gradient_descent_base``).

Shapes: ``x`` is ``(B, ...)``; ``eps`` is a float or a tensor of shape ``(B,)`` (one radius per
sample); per-sample quantities are ``(B,)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from advlab import streams
from advlab.streams import Randomness

Eps = float | Tensor

NORMS = ("linf", "l2", "l1")
_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l∞": "linf", "l2": "l2", "2": "l2",
            "l1": "l1", "1": "l1"}
#: Slack allowed in membership tests (float32 round-off after projection).
ATOL = 1e-5


def canonical_norm(norm: str | int | float) -> str:
    """Map ``"Linf" | "inf" | inf | "l2" | 2 | "l1" | 1`` to ``"linf" | "l2" | "l1"``."""
    key = str(norm).strip().lower().replace("-", "_")
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        value = float(norm)  # 2.0 and numpy scalars work like 2
        key = "linf" if math.isinf(value) else (str(int(value)) if value.is_integer() else key)
    if key not in _ALIASES:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return _ALIASES[key]


def flat(t: Tensor) -> Tensor:
    """``(B, ...) -> (B, D)``: one row per sample (also for an empty batch or no features)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


_flat = flat  # the old private name, kept for one release


def per_sample_view(per_sample: Tensor, like: Tensor) -> Tensor:
    """Reshape a ``(B,)`` tensor so it broadcasts against ``like`` of shape ``(B, ...)``."""
    return per_sample.reshape(-1, *([1] * (like.dim() - 1)))


def lp_norm(t: Tensor, norm: str) -> Tensor:
    """Per-sample Lp norm of ``t`` (``(B, ...)`` -> ``(B,)``)."""
    rows = flat(t)
    if norm == "linf":
        return rows.abs().amax(dim=1) if rows.shape[1] else rows.new_zeros(rows.shape[0])
    return torch.linalg.vector_norm(rows, ord=2 if norm == "l2" else 1, dim=1)


def project_l1_ball(delta: Tensor, eps: Tensor) -> Tensor:
    """Exact Euclidean projection of each row of ``delta`` onto the L1 ball of radius ``eps``.

    Sorting-based algorithm of Duchi, Shalev-Shwartz, Singer & Chandra (ICML 2008).
    ``delta``: ``(B, D)``; ``eps``: ``(B,)``. Rows already inside are returned unchanged.
    """
    abs_delta = delta.abs()
    inside = abs_delta.sum(dim=1) <= eps
    sorted_abs, _ = torch.sort(abs_delta, dim=1, descending=True)
    cumsum = sorted_abs.cumsum(dim=1)
    ranks = torch.arange(1, delta.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    # rho = largest j with sorted_j - (cumsum_j - eps) / j > 0
    positive = sorted_abs - (cumsum - eps[:, None]) / ranks > 0
    rho = (positive * ranks).argmax(dim=1)  # index of the last positive entry
    theta = (cumsum.gather(1, rho[:, None]).squeeze(1) - eps) / (rho + 1).to(delta.dtype)
    theta = theta.clamp_min(0.0)
    projected = delta.sign() * (abs_delta - theta[:, None]).clamp_min(0.0)
    return torch.where(inside[:, None], delta, projected)


def project_l1_box(delta: Tensor, eps: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Exact Euclidean projection of each row of ``delta`` onto ``{d : ||d||_1 <= eps,
    low <= d <= high}`` (the L1 ball intersected with the box, as in Croce & Hein 2021, "Mind the
    box"). ``delta``, ``low <= 0 <= high``: ``(B, D)``; ``eps``: ``(B,)``.

    The KKT conditions give ``d_i = sign(v_i) min(max(|v_i| - lam, 0), c_i)`` with ``c_i`` the
    room in the direction of ``v_i``; ``f(lam) = sum_i |d_i|`` is piecewise linear and
    non-increasing, with kinks at ``|v_i| - c_i`` and ``|v_i|``. The kinks are sorted, ``f`` is
    evaluated at all of them by accumulating slopes (in float64), and ``lam`` is the root of
    ``f(lam) = eps`` on its segment (``lam = 0`` when the clipped point is already inside).
    """
    work = delta.double()
    room = torch.where(work >= 0, high.double(), -low.double()).clamp_min(0.0)  # (B, D)
    size = work.abs()
    n, d = work.shape
    kinks = torch.cat([size - room, size], dim=1)  # (B, 2D): a coordinate leaves its cap, hits 0
    events = torch.cat([-torch.ones_like(size), torch.ones_like(size)], dim=1)
    kinks, order = kinks.sort(dim=1)
    slope = events.gather(1, order).cumsum(dim=1)  # slope of f right after each kink
    f_at = room.sum(dim=1, keepdim=True) + torch.cat(
        [work.new_zeros(n, 1), (slope[:, :-1] * kinks.diff(dim=1)).cumsum(dim=1)], dim=1)
    target = eps.double()[:, None]
    below = (f_at <= target) & (kinks >= 0)
    # the first kink where f falls to eps (at lam >= 0); the root lies on the segment before it
    last = torch.full((n,), 2 * d - 1, dtype=torch.long, device=work.device)
    first = torch.where(below.any(dim=1), below.double().argmax(dim=1), last)
    prev = (first - 1).clamp_min(0)
    f_prev, k_prev = f_at.gather(1, prev[:, None]).squeeze(1), kinks.gather(1, prev[:, None]).squeeze(1)
    s_prev = slope.gather(1, prev[:, None]).squeeze(1)
    lam = k_prev + (f_prev - target.squeeze(1)) / (-s_prev).clamp_min(1e-300)
    lam = torch.maximum(lam, k_prev).clamp_min(0.0)
    clipped = torch.minimum(size, room)
    inside = clipped.sum(dim=1) <= target.squeeze(1)
    lam = torch.where(inside, torch.zeros_like(lam), lam)
    out = work.sign() * torch.minimum((size - lam[:, None]).clamp_min(0.0), room)
    return out.to(delta.dtype)


@dataclass(frozen=True, eq=False)
class ThreatModel:
    """An Lp ball of radius ``eps`` around each input, intersected with the box ``bounds``.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (aliases such as ``"Linf"`` or ``2`` are accepted).
        eps: radius, a non-negative float or a ``(B,)`` tensor of per-sample radii. Required:
            there is no default radius (a sensible one depends on the data and the norm).
        bounds: ``(low, high)`` of valid input values, ``(0.0, 1.0)`` for images.
    """

    norm: str = "linf"
    eps: Eps = None  # type: ignore[assignment]  # required: __post_init__ refuses None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        eps = self.eps
        if eps is None:
            raise TypeError("ThreatModel needs eps, e.g. ThreatModel(norm='linf', eps=8/255)")
        if isinstance(eps, Tensor):
            eps = eps.detach().to(torch.float32).reshape(-1)
            if not torch.isfinite(eps).all() or (eps < 0).any():
                raise ValueError("eps must be finite and non-negative (got NaN/inf/negative values)")
        else:
            if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
                raise TypeError(f"eps must be a float or a (B,) tensor, got {type(eps).__name__}")
            eps = float(eps)
            if not math.isfinite(eps) or eps < 0:
                raise ValueError(f"eps must be finite and non-negative, got {eps}")
        object.__setattr__(self, "eps", eps)
        low, high = (float(b) for b in self.bounds)
        if not low < high:
            raise ValueError(f"bounds must satisfy low < high, got {self.bounds}")
        object.__setattr__(self, "bounds", (low, high))

    # ------------------------------------------------------------------ helpers
    def with_eps(self, eps: Eps) -> ThreatModel:
        """A copy of this threat model with another radius."""
        return ThreatModel(self.norm, eps, self.bounds)

    def eps_per_sample(self, x: Tensor) -> Tensor:
        """Radii as a ``(B,)`` tensor on ``x``'s device and dtype."""
        if isinstance(self.eps, Tensor):
            eps = self.eps.to(device=x.device, dtype=x.dtype)
            if eps.numel() == 1:
                return eps.expand(x.shape[0]).clone()
            if eps.shape[0] != x.shape[0]:
                raise ValueError(f"per-sample eps has {eps.shape[0]} entries but the batch has {x.shape[0]}")
            return eps
        return torch.full((x.shape[0],), self.eps, device=x.device, dtype=x.dtype)

    def select(self, index: Tensor) -> ThreatModel:
        """The threat model restricted to samples ``index`` (only changes a per-sample eps)."""
        if isinstance(self.eps, Tensor) and self.eps.numel() > 1:
            return self.with_eps(self.eps[index.to(self.eps.device)])
        return self

    def clip(self, x: Tensor) -> Tensor:
        """Clamp ``x`` into ``bounds``."""
        return x.clamp(*self.bounds)

    # ------------------------------------------------------------------ geometry
    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-sample norm of ``x_adv - x``: ``(B, ...) -> (B,)``."""
        return lp_norm(x_adv - x, self.norm)

    def contains(self, x: Tensor, x_adv: Tensor, atol: float = ATOL) -> Tensor:
        """``(B,)`` bool: ``x_adv`` is within ``eps`` of ``x`` and inside ``bounds`` (up to ``atol``)."""
        eps = self.eps_per_sample(x)
        in_ball = self.distance(x, x_adv) <= eps * (1 + atol) + atol
        rows = flat(x_adv)
        if not rows.shape[1]:
            return in_ball
        low, high = self.bounds
        # per-row extremes (two fast reductions instead of elementwise tests): a NaN propagates
        # into both and fails every comparison, and an inf fails isfinite even with infinite bounds
        lowest, highest = rows.amin(dim=1), rows.amax(dim=1)
        in_box = (lowest >= low - atol) & (highest <= high + atol)
        return in_ball & in_box & torch.isfinite(lowest) & torch.isfinite(highest)

    def project_delta(self, delta: Tensor, eps: Tensor | None = None) -> Tensor:
        """Euclidean projection of a perturbation onto the Lp ball (no box): ``(B, ...)``."""
        eps = self.eps_per_sample(delta) if eps is None else eps
        if self.norm == "linf":
            e = per_sample_view(eps, delta)
            return torch.maximum(torch.minimum(delta, e), -e)
        if self.norm == "l2":
            norms = lp_norm(delta, "l2")
            factor = torch.where(norms > eps, eps / norms.clamp_min(1e-12), torch.ones_like(norms))
            return delta * per_sample_view(factor, delta)
        return project_l1_ball(flat(delta), eps).reshape(delta.shape)

    def linf_box(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Corners ``(lower, upper)``, each ``(B, ...)``, of the Linf ball of radius ``eps``
        (default: this threat model's) around ``x`` intersected with ``bounds``.

        ``clamp(x_adv, lower, upper)`` is the exact projection onto that set; an iterative attack
        computes the box once and then projects every iterate with a single pass.
        """
        e = per_sample_view(self.eps_per_sample(x) if eps is None else eps, x)
        low, high = self.bounds
        return (x - e).clamp_(min=low), (x + e).clamp_(max=high)

    def project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Map ``x_adv`` into the threat set around ``x``.

        ``linf``: the exact projection onto the intersection of ball and box (a clamp to
        :meth:`linf_box`, idempotent in floating point). ``l1``: the exact projection onto the
        intersection too (:func:`project_l1_box`, Croce & Hein 2021). ``l2``: the perturbation is
        projected onto the ball, then the point is clipped into the box; clipping a point of a
        box-centred ball moves every coordinate towards ``x``, so the result stays in the ball.
        """
        if self.norm == "linf":
            return torch.clamp(x_adv, *self.linf_box(x))
        if self.norm == "l1":
            return self.project_l1(x, x_adv)
        delta = self.project_delta(x_adv - x)
        return self.clip(x + delta)

    def project_l1(self, x: Tensor, x_adv: Tensor, eps: Tensor | None = None) -> Tensor:
        """The exact projection of ``x_adv`` onto the L1 ball of radius ``eps`` (default: this
        threat model's, ``(B,)``) around ``x`` intersected with ``bounds``: ``(B, ...)``."""
        eps = self.eps_per_sample(x) if eps is None else eps
        low, high = self.bounds
        rows, base = flat(x_adv - x), flat(x)
        delta = project_l1_box(rows, eps, low - base, high - base)
        return self.clip(x + delta.reshape(x.shape))

    def random_init(self, x: Tensor, *, generator: Randomness = None) -> Tensor:
        """A point drawn uniformly from the ``eps``-ball around ``x`` (then clipped to the box).

        Linf: uniform in the cube. L2: Gaussian direction times ``eps * U^(1/d)``. L1: signed
        Dirichlet(1, ..., 1) coordinates (``d + 1`` exponentials, the last as slack), which is
        uniform in the cross-polytope. ``generator`` (a ``torch.Generator`` or
        :class:`~advlab.streams.PointStreams`, one stream per row) makes the draw reproducible.
        """
        b, d = x.shape[0], x[0].numel()
        eps = self.eps_per_sample(x)
        kw = {"device": x.device, "dtype": x.dtype}
        if self.norm == "linf":
            delta = (streams.rand((b, d), generator, **kw) * 2 - 1) * eps[:, None]
        elif self.norm == "l2":
            direction = streams.randn((b, d), generator, **kw)
            direction = direction / lp_norm(direction, "l2").clamp_min(1e-12)[:, None]
            radius = streams.rand((b,), generator, **kw).pow(1.0 / d) * eps
            delta = direction * radius[:, None]
        else:
            expo = -streams.rand((b, d + 1), generator, **kw).clamp_min(1e-12).log()
            coords = expo[:, :d] / expo.sum(dim=1, keepdim=True)
            signs = streams.randint(2, (b, d), generator, device=x.device).to(x.dtype) * 2 - 1
            delta = coords * signs * eps[:, None]
        return self.clip(x + delta.reshape(x.shape))

    def ascent_direction(self, grad: Tensor, l1_sparsity: float = 0.95) -> Tensor:
        """Steepest-ascent direction of unit Lp norm for a gradient ``grad`` of shape ``(B, ...)``.

        Linf: ``sign(grad)``. L2: ``grad / ||grad||_2``. L1: a sparse step on the coordinates in the
        top ``1 - l1_sparsity`` fraction of ``|grad|`` per sample (SLIDE-style, Tramer & Boneh
        2019), scaled to unit L1 norm. Zero gradients give a zero direction.
        """
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l2":
            norms = lp_norm(grad, "l2").clamp_min(1e-12)
            return grad / per_sample_view(norms, grad)
        rows = flat(grad)
        k = max(1, int(round((1.0 - l1_sparsity) * rows.shape[1])))
        threshold = rows.abs().topk(k, dim=1).values[:, -1:]
        mask = (rows.abs() >= threshold) & (rows != 0)
        direction = rows.sign() * mask
        direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
        return direction.reshape(grad.shape)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: Eps) -> Tensor:
        """``x_adv + step_size * ascent_direction(grad)``; ``step_size`` float or ``(B,)``.

        Fused for the hot loop of the gradient attacks: L2 folds the per-sample normalisation
        into the step size, so the step costs one pass over the batch.
        """
        per_sample = isinstance(step_size, Tensor) and step_size.dim() > 0
        if self.norm == "l2":
            norms = lp_norm(grad, "l2").clamp_min(1e-12)
            scale = (step_size.to(x_adv) if per_sample else torch.as_tensor(step_size).to(x_adv)) / norms
            return torch.addcmul(x_adv, per_sample_view(scale, x_adv), grad)
        direction = grad.sign() if self.norm == "linf" else self.ascent_direction(grad)
        if per_sample:
            return torch.addcmul(x_adv, per_sample_view(step_size.to(x_adv), x_adv), direction)
        return x_adv.add(direction, alpha=float(step_size))

    def __repr__(self) -> str:
        eps = (f"tensor(shape={tuple(self.eps.shape)})" if isinstance(self.eps, Tensor)
               else f"{self.eps:g}")
        return f"ThreatModel(norm={self.norm!r}, eps={eps}, bounds={self.bounds})"


flat = _flat  # public name: (B, ...) -> (B, D)
