"""The search behind :func:`advlab.evaluation.noise.minimal_noise_norm`: random unit directions,
and the flip distance along each ray by a scan then bisection (Fawzi, Moosavi-Dezfooli &
Frossard 2016). Shapes: ``x`` ``(n, ...)``, directions ``(n, k, d)`` with ``d = prod(x.shape[1:])``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advlab._checks import check_int
from advlab.attacks._core import is_adversarial, predict
from advlab.attacks.noise import unit_sphere
from advlab.threat import lp_norm


def directions_of(x: Tensor, directions: int | Tensor, norm: str, subspace_dim: int | None,
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


def flip_distances(model: nn.Module, x: Tensor, y: Tensor, rays: Tensor, max_norm: float,
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


def check_minimal_options(x: Tensor, directions: int | Tensor, bisection_steps: int, scan_steps: int,
                           subspace_dim: int | None, max_norm: float | None) -> None:
    if not isinstance(directions, Tensor):
        check_int("directions", directions)
    check_int("scan_steps", scan_steps)
    if isinstance(bisection_steps, bool) or not isinstance(bisection_steps, int) or bisection_steps < 0:
        raise ValueError(f"bisection_steps must be an integer >= 0, got {bisection_steps!r}")
    d = x[0].numel() if x.dim() >= 2 else 0
    if subspace_dim is not None and (not isinstance(subspace_dim, int) or not 1 <= subspace_dim <= d):
        raise ValueError(f"subspace_dim must be an integer in [1, {d}] (the input dimension), got {subspace_dim!r}")
    if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")


CHUNK_ELEMENTS = 2 ** 24  # samples are processed in chunks holding about this many numbers


def minimal_chunk(model: nn.Module, x: Tensor, y: Tensor, logits: Tensor, u: Tensor, norm: str,
                   max_norm: float, scan_steps: int, bisection_steps: int, bounds: tuple[float, float],
                   batch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`~advlab.evaluation.noise.minimal_noise_norm` on samples ``x`` ``(b, ...)`` with unit directions ``u`` ``(b, k, d)``."""
    n, k, d = u.shape
    rays = torch.cat([u, -u], dim=1)  # (b, 2k, d): both rays of every line
    steps = torch.zeros(n, 2 * k, dtype=x.dtype, device=x.device)  # 0 where misclassified already
    todo = (~is_adversarial(logits, y)).nonzero().squeeze(1)
    if todo.numel():
        steps[todo] = flip_distances(model, x[todo], y[todo], rays[todo], max_norm, scan_steps,
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
