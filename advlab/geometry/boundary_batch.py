"""Boundary curvature in many cross-sections at once, evaluating only the grid cells it reads.

:func:`advlab.geometry.boundary.section_curvature` on a dense
:func:`~advlab.geometry.boundary.cross_section` (Fawzi, Moosavi-Dezfooli, Frossard & Soatto 2018)
classifies all ``R x R`` grid points but reads only the half rows ``a >= 0``: first to find the
row nearest the ``u`` axis where the boundary crosses, then the rows within
``|b| <= max(crossing, 3 steps)`` for the quadratic fit. :func:`section_curvatures` evaluates
exactly those half rows, for all points in shared forward passes under ``torch.inference_mode``,
and applies the same interpolation and fit to them. The grid, the rows found and the fit are the
dense computation's, so the results agree with it up to float rounding of the forward passes at
other batch sizes (tested: equal to the dense reference within ``1e-6`` relative on a small
network). With ``R = 31`` and DeepFool's distance as ``extent / 2.5`` about 14 of 31 half rows are
read: about 4x fewer forward passes, in large batches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard
from advlab.attacks.losses import margin
from advlab.geometry._common import grid_axis, orthonormal_pair
from advlab.geometry.boundary import section_curvature
from advlab.threat import flat

__all__ = ["section_curvatures"]


def _row_margins(model: nn.Module, x: Tensor, u: Tensor, v: Tensor, labels: Tensor, axes: Tensor,
                 start: int, cells: list[tuple[int, int]], batch_size: int) -> Tensor:
    """Margins ``(len(cells), R - start)`` of the half rows ``(point i, row r)`` of ``cells``."""
    index = torch.tensor([i for i, _ in cells], dtype=torch.long, device=x.device)
    rows = torch.tensor([r for _, r in cells], dtype=torch.long, device=x.device)
    columns = axes[:, start:]  # (N, W)
    width = columns.shape[1]
    shape = (len(cells), width, *([1] * (x.dim() - 1)))
    a = columns[index].reshape(shape)  # (M, W, 1, ...)
    b = axes[index, rows].reshape(shape[:1] + (1,) * (len(shape) - 1))  # (M, 1, 1, ...)
    points = (x[index].unsqueeze(1) + a * u[index].unsqueeze(1) + b * v[index].unsqueeze(1))
    points = points.reshape(-1, *x.shape[1:])  # (M * W, ...)
    targets = labels[index].repeat_interleave(width)
    out = [margin(model(chunk), target) for chunk, target in
           zip(points.split(batch_size), targets.split(batch_size))]
    return torch.cat(out).reshape(len(cells), width)


def _crosses(row: Tensor) -> bool:
    """Whether the margin along a half row turns non-positive after its first cell."""
    negative = torch.nonzero(row <= 0).flatten()
    return len(negative) > 0 and int(negative[0]) > 0


def section_curvatures(model: nn.Module, x: Tensor, direction1: Tensor, direction2: Tensor,
                       extents: Tensor, *, resolution: int = 31,
                       batch_size: int = 8192) -> tuple[Tensor, Tensor]:
    """``(kappa, crossing)`` ``(N,)`` float64 of :func:`~advlab.geometry.boundary.section_curvature`
    on the cross-section of each point, without classifying the cells it does not read.

    Args:
        model: classifier returning logits ``(N, K)``.
        x: points ``(N, ...)``; direction1: ``u`` before normalisation ``(N, ...)``;
            direction2: ``v`` before orthogonalisation ``(N, ...)``.
        extents: half-width of each section ``(N,)`` in input units; ``nan``/non-positive skips
            the point (``nan`` results).
        resolution: grid points per axis, as in ``cross_section``.
        batch_size: grid points per forward pass.
    """
    count = len(x)
    kappa = torch.full((count,), math.nan, dtype=torch.float64)
    crossing = kappa.clone()
    extents = extents.double().cpu()
    nonzero = (flat(direction1).norm(dim=1) > 0).cpu()
    valid = [i for i in range(count)
             if math.isfinite(float(extents[i])) and float(extents[i]) > 0 and bool(nonzero[i])]
    if not valid:
        return kappa, crossing
    keep = torch.tensor(valid, dtype=torch.long, device=x.device)
    xs, first, second = x[keep], direction1[keep], direction2[keep]
    axes = torch.stack([grid_axis(float(extents[i]), resolution) for i in valid]).to(x.device, x.dtype)
    with model_guard(model), torch.inference_mode():
        u, v = orthonormal_pair(first, second)
        labels = model(xs).argmax(dim=1)
        start = int(torch.argmin(axes[0].abs()))
        margins = torch.full((len(valid), resolution, resolution), math.nan, dtype=x.dtype)
        _find_rows(model, xs, u, v, labels, axes, start, margins, batch_size)
    for j, i in enumerate(valid):
        section = {"margins": margins[j], "offsets1": axes[j].cpu(), "offsets2": axes[j].cpu(),
                   "extent": float(extents[i])}
        kappa[i], crossing[i] = section_curvature(section)
    return kappa, crossing


def _find_rows(model: nn.Module, x: Tensor, u: Tensor, v: Tensor, labels: Tensor, axes: Tensor,
               start: int, margins: Tensor, batch_size: int) -> None:
    """Fill ``margins[j, r, start:]`` for the rows :func:`section_curvature` reads, in place.

    Rows are visited as ``argmin |b|`` visits them (by ``|b|``, then index) until one crosses;
    then every row with ``|b| <= max(crossing, 3 steps)`` is filled.
    """
    axes_cpu = axes.cpu().double()
    order = [sorted(range(axes.shape[1]), key=lambda r, a=a: (abs(float(a[r])), r)) for a in axes_cpu]
    pending, found = list(range(len(x))), {}
    for k in range(axes.shape[1]):
        if not pending:
            break
        cells = [(j, order[j][k]) for j in pending]
        values = _row_margins(model, x, u, v, labels, axes, start, cells, batch_size).cpu()
        still = []
        for (j, r), row in zip(cells, values):
            margins[j, r, start:] = row
            (found.__setitem__(j, r) if _crosses(row) else still.append(j))
        pending = still
    cells = []
    for j, r in found.items():
        crossing = _first_crossing(margins[j, r].double(), axes_cpu[j], start)
        step = float(axes_cpu[j, 1] - axes_cpu[j, 0])
        window = max(crossing, 3 * step)
        cells += [(j, s) for s in range(axes.shape[1]) if abs(float(axes_cpu[j, s])) <= window + 1e-12
                  and bool(torch.isnan(margins[j, s, start]))]
    if cells:
        values = _row_margins(model, x, u, v, labels, axes, start, cells, batch_size).cpu()
        for (j, s), row in zip(cells, values):
            margins[j, s, start:] = row


def _first_crossing(row: Tensor, offsets: Tensor, start: int) -> float:
    """The interpolated first sign change of ``row[start:]`` (as in ``boundary_profile``)."""
    negative = torch.nonzero(row[start:] <= 0).flatten()
    j = int(negative[0]) + start
    m0, m1 = float(row[j - 1]), float(row[j])
    a0, a1 = float(offsets[j - 1]), float(offsets[j])
    return a0 + (a1 - a0) * m0 / (m0 - m1)


def dense_reference(model: nn.Module, x: Tensor, direction1: Tensor, direction2: Tensor,
                    extents: Tensor, *, resolution: int = 31) -> tuple[Tensor, Tensor]:
    """The same ``(kappa, crossing)`` from full dense cross-sections, one point at a time (slow)."""
    from advlab.geometry.boundary import cross_section

    kappa = torch.full((len(x),), math.nan, dtype=torch.float64)
    crossing = kappa.clone()
    for i in range(len(x)):
        extent = float(extents[i])
        if not (math.isfinite(extent) and extent > 0) or float(flat(direction1[i:i + 1]).norm()) == 0:
            continue
        section = cross_section(model, x[i], direction1[i], direction2[i], extent=extent,
                                resolution=resolution)
        kappa[i], crossing[i] = section_curvature(section)
    return kappa, crossing
