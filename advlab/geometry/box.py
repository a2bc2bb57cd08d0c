"""The valid inputs of a 2-D section: the input box ``[low, high]^d`` cut by the plane ``x0 + a u + b v``.

The cut is convex: every coordinate ``i`` adds the two half-planes
``low - x0_i <= a u_i + b v_i <= high - x0_i`` of the ``(a, b)`` plane, and the square
``[-extent, extent]^2`` of the figure closes it. :func:`box_section` clips the square by every
half-plane (Sutherland & Hodgman 1974, "Reentrant polygon clipping") and returns the polygon, its
area and the fraction of the square it covers. For images with many pixels exactly at 0 or 1,
the half-planes of those pixels pass through ``x0`` itself and the cut is often a thin wedge or
only ``x0``: most of a cross-section is then outside the valid inputs, and the figures say so.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

Point = tuple[float, float]


def _clip(polygon: list[Point], p: float, q: float, c: float) -> list[Point]:
    """Keep the part of ``polygon`` where ``p a + q b <= c``."""
    kept: list[Point] = []
    for k, current in enumerate(polygon):
        previous = polygon[k - 1]
        inside_now = p * current[0] + q * current[1] <= c
        inside_before = p * previous[0] + q * previous[1] <= c
        if inside_now != inside_before:
            before, now = p * previous[0] + q * previous[1] - c, p * current[0] + q * current[1] - c
            t = before / (before - now)
            kept.append((previous[0] + t * (current[0] - previous[0]),
                         previous[1] + t * (current[1] - previous[1])))
        if inside_now:
            kept.append(current)
    return kept


def _area(polygon: list[Point]) -> float:
    """Shoelace area of a simple polygon (0 for fewer than three vertices)."""
    return 0.5 * abs(sum(a0 * b1 - a1 * b0 for (a0, b0), (a1, b1)
                         in zip(polygon, polygon[1:] + polygon[:1]))) if len(polygon) >= 3 else 0.0


def box_section(x0: Tensor, u: Tensor, v: Tensor, *, extent: float,
                bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """The part of the square ``[-extent, extent]^2`` where ``x0 + a u + b v`` lies in the box.

    Args:
        x0: the point, any shape (e.g. ``(C, H, W)``); u, v: the plane's directions, same shape
            (the axes of the figure; they need not be orthonormal).
        extent: half-width of the square (input units); bounds: ``(low, high)`` of the box.

    Returns:
        dict with ``vertices`` ``(K, 2)`` float64 (``(a, b)`` in order around the polygon; ``K = 0``
        when ``x0`` itself is outside the box), ``area`` and ``fraction`` (area over the square's).
        A zero area with vertices means the box meets the plane in a segment or only at ``x0``.
    """
    if not (u.shape == v.shape == x0.shape):
        raise ValueError(f"x0, u and v must have the same shape, got {tuple(x0.shape)}, "
                         f"{tuple(u.shape)} and {tuple(v.shape)}")
    low, high = bounds
    x = x0.detach().double().flatten().cpu()
    p = u.detach().double().flatten().cpu()
    q = v.detach().double().flatten().cpu()
    scale = float(torch.maximum(p.abs(), q.abs()).max()) * extent or 1.0
    tolerance = 1e-12 * scale  # round-off of a coordinate sitting exactly on the box's face
    polygon: list[Point] = [(-extent, -extent), (extent, -extent), (extent, extent), (-extent, extent)]
    moving = (p != 0) | (q != 0)
    if bool(((x < low) | (x > high))[~moving].any()):
        polygon = []
    for pi, qi, xi in zip(p[moving].tolist(), q[moving].tolist(), x[moving].tolist()):
        if not polygon:
            break
        polygon = _clip(polygon, pi, qi, high - xi + tolerance)
        polygon = _clip(polygon, -pi, -qi, xi - low + tolerance)
    vertices = torch.tensor(polygon, dtype=torch.float64).reshape(-1, 2)
    area = _area(polygon)
    return {"vertices": vertices, "area": area, "fraction": area / (2.0 * extent) ** 2}


def box_summary(box: dict[str, Any]) -> str:
    """A caption fragment describing :func:`box_section`'s result."""
    if len(box["vertices"]) == 0:
        return "the point is outside the input box"
    if box["fraction"] < 1e-4:
        return "the input box meets this plane only in a segment or at the point itself"
    return f"valid inputs cover {100 * box['fraction']:.2g} % of the square"
