"""Figures of the (adversarial direction, top eigenvector) plane (:mod:`advlab.geometry.eigenplane`).

* :func:`plot_plane_sections`: for one test point, each model's loss over its own plane
  (log colour scale), its decision boundary (black) and the [0, 1] box (dashed white);
* :func:`plot_plane_flattening`: the per-point curvature along the eigenvector of one model
  against the other's (log-log, with ``y = x``), and the loss along the eigenvector direction,
  median and 10-90 % band over the points, one colour per run.

Functions of data only: tensors, dicts from :func:`~advlab.geometry.boundary.cross_section`,
:func:`~advlab.geometry.box.box_section` and :func:`advlab.geometry.stats.paired_ratio`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advlab.geometry.boundary import draw_box
from advlab.geometry.landscape import draw_loss, loss_colorbar
from advlab.report.plotting import add_legend, colours_for, new_figure, save_figure


def plot_plane_sections(panels: list[dict[str, Any]], path: str | Path, *, point: int,
                        true_class: int) -> Path:
    """One panel per model: ``panel`` has ``label``, ``loss`` ``(R, R)`` (rows along ``v``),
    ``section`` (a cross-section on the same grid: ``offsets1``, ``offsets2``, ``margins``),
    ``box`` (a box section) and ``curvature`` (the second difference along ``v``)."""
    if not panels:
        raise ValueError("need at least one panel")
    fig, axes = new_figure(ncols=len(panels), width=4.4, height=4.0, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        section = panel["section"]
        a, b = section["offsets1"], section["offsets2"]
        filled = draw_loss(ax, panel["loss"], a, b)
        ax.contour(a.cpu().numpy(), b.cpu().numpy(), section["margins"].cpu().numpy(), levels=[0.0],
                   colors="black", linewidths=1.4)
        draw_box(ax, panel["box"])
        ax.plot([0.0], [0.0], marker="*", color="white", markeredgecolor="black", markersize=12)
        ax.set(title=f"{panel['label']}: point {point} (class {true_class}), "
                     f"curvature along v {panel['curvature']:.2g}",
               xlabel="α along its DeepFool direction u (L2)",
               ylabel="β along its top eigenvector v (L2)")
        loss_colorbar(fig, filled, ax, label="cross-entropy (log scale)", shrink=0.85)
    return save_figure(fig, path)


def _scatter(ax: Any, a: Tensor, b: Tensor, labels: tuple[str, str], row: dict[str, Any],
             colour: str) -> None:
    a, b = a.double().abs().cpu(), b.double().abs().cpu()
    keep = torch.isfinite(a) & torch.isfinite(b) & (a > 0) & (b > 0)
    if not bool(keep.any()):
        ax.text(0.5, 0.5, "no positive curvatures to show", ha="center", transform=ax.transAxes)
        return
    ax.scatter(a[keep].numpy(), b[keep].numpy(), s=18, color=colour, alpha=0.8,
               label=f"one point each (n = {int(keep.sum())})")
    low = float(min(a[keep].min(), b[keep].min())) / 1.5
    high = float(max(a[keep].max(), b[keep].max())) * 1.5
    ax.plot([low, high], [low, high], "k--", linewidth=1.0, label="equal")
    ratio, (lo, hi) = row["ratio"], row["ci"]
    if math.isfinite(ratio):
        ax.plot([low, high], [low * ratio, high * ratio], color=colour, linewidth=1.2,
                label=f"median ratio {ratio:.3g} [{lo:.3g}, {hi:.3g}]")
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high),
           xlabel=f"{labels[0]}: |curvature| along v", ylabel=f"{labels[1]}: |curvature| along v",
           title=f"{labels[1]} / {labels[0]}: {row['verdict']}")
    add_legend(ax)


def plot_plane_flattening(curvatures: dict[str, Tensor], rises: dict[str, Tensor], offsets: Tensor,
                          row: dict[str, Any] | None, path: str | Path, *,
                          colours: dict[str, str] | None = None) -> Path:
    """Left (two models): ``|curvature|`` per point of the second model against the first.
    Right: the even part of the loss along each model's ``v``,
    ``(l(x + βv) + l(x - βv)) / 2 - l(x)`` (about ``κ β² / 2``; the sign of ``v`` does not matter),
    median and 10-90 % band over the points (symlog axis).

    ``curvatures[label]`` ``(P,)``; ``rises[label]`` ``(A, P)`` at ``offsets`` ``(A,)`` (``β >= 0``,
    L2 units); ``row``: the :func:`~advlab.geometry.stats.paired_ratio` dict (second / first).
    """
    labels = list(curvatures)
    palette = colours or colours_for(labels)
    paired = len(labels) == 2 and row is not None
    fig, axes = new_figure(ncols=2 if paired else 1, width=4.8, height=4.2, squeeze=False)
    if paired:
        assert row is not None
        _scatter(axes[0][0], curvatures[labels[0]], curvatures[labels[1]], (labels[0], labels[1]),
                 row, palette[labels[1]])
    ax = axes[0][-1]
    quantiles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    largest = 0.0
    for label, rise in rises.items():
        band = torch.quantile(rise.double().cpu(), quantiles, dim=1)  # (3, A)
        largest = max(largest, float(band.abs().max()))
        ax.fill_between(offsets.cpu().numpy(), band[0].numpy(), band[2].numpy(), color=palette[label],
                        alpha=0.2)
        ax.plot(offsets.cpu().numpy(), band[1].numpy(), color=palette[label], linewidth=1.8,
                label=f"{label}: median, 10-90 % (n = {rise.shape[1]})")
    ax.set_yscale("symlog", linthresh=max(largest * 1e-2, 1e-9))
    ax.set(xlabel="β along each model's top eigenvector v (L2)",
           ylabel="(l(x + βv) + l(x − βv)) / 2 − l(x)", title="Even part of the loss along v")
    ax.grid(alpha=0.3)
    add_legend(ax)
    return save_figure(fig, path)
