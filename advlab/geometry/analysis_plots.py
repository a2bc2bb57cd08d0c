"""Figures of :func:`advlab.geometry.analysis.analyse` that the core plotting functions do not cover.

* :func:`plot_eigenvalue_profiles`: ``|lambda|`` of the input Hessian against its rank, several
  models overlaid on a log scale (Moosavi-Dezfooli, Fawzi et al. 2019: adversarial training
  lowers the curvature; Fawzi et al. 2018: few large eigenvalues, a long flat tail).
* :func:`plot_bounds_vs_measured`: CURE's lower and upper bounds on ``||r*||`` against the
  measured minimal perturbation (DeepFool), with the line ``y = x``.
* :func:`plot_noise_ratios`: the random-noise to adversarial ratio per sample against
  ``sqrt(d)``, and the median ratio in random subspaces against ``sqrt(d / m)`` (Fawzi,
  Moosavi-Dezfooli & Frossard 2016).

* :func:`plot_point_sections`: the cross-sections of one test point, every model side by side.

All take data (per-model tensors keyed by the model's label, lists, a path) and write one PNG
(returned path); the analysis steps record them with their captions. ``colours`` maps a model's
label to its colour (default :func:`advlab.report.plotting.colours_for` of the labels: the
report's colour of a run of that name), so one run has one colour in every figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advlab.geometry.boundary import plot_cross_sections
from advlab.report.plotting import colours_for, new_figure, save_figure


def plot_eigenvalue_profiles(profiles: dict[str, Tensor], path: str | Path, *,
                             title: str = "Input-Hessian eigenvalues by rank",
                             floor_ratio: float = 1e-8, colours: dict[str, str] | None = None) -> Path:
    """Overlay ``|lambda|`` sorted descending against the rank, one colour per model.

    ``profiles[label]`` is ``(P, R)``: ``R`` eigenvalues of each of ``P`` points (any order). Thin
    lines are single points, the thick line the median over points. Values below
    ``floor_ratio`` times the largest ``|lambda|`` (round-off around the exact zeros of ReLU
    networks' low-rank Hessians) are drawn at that floor so the log axis stays readable; the
    rank axis is logarithmic too beyond 50 eigenvalues.
    """
    if not profiles:
        raise ValueError("need at least one model's eigenvalues")
    magnitudes = {label: values.double().abs().sort(dim=1, descending=True).values.cpu()
                  for label, values in profiles.items()}
    largest = max(float(m.max()) for m in magnitudes.values())
    floor = max(largest * floor_ratio, 1e-300)
    palette = colours or colours_for(magnitudes)
    fig, ax = new_figure(width=5.8, height=4.2)
    for label, values in magnitudes.items():
        ranks = torch.arange(1, values.shape[1] + 1).numpy()
        shown = values.clamp_min(floor).numpy()
        for row in shown:
            ax.plot(ranks, row, color=palette[label], linewidth=0.6, alpha=0.35)
        ax.plot(ranks, torch.quantile(values, 0.5, dim=0).clamp_min(floor).numpy(),
                color=palette[label], linewidth=2.0, label=f"{label} (median of {len(values)} points)")
    ax.set_yscale("log")
    if max(values.shape[1] for values in magnitudes.values()) > 50:
        ax.set_xscale("log")
    ax.set(title=title, xlabel="rank (eigenvalues sorted by |λ|)", ylabel="|λ| of the input Hessian")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_bounds_vs_measured(measured: dict[str, Tensor], lower: dict[str, Tensor],
                            upper: dict[str, Tensor], path: str | Path, *,
                            title: str = "CURE bounds vs the measured minimal perturbation",
                            colours: dict[str, str] | None = None) -> Path:
    """Scatter the bounds (``v`` lower, ``^`` upper) against the measured ``||r*||`` per sample.

    All dicts map a model label to ``(N,)`` tensors; samples whose measured norm or bound is not
    finite and positive are left out (log-log axes). The dashed line is ``y = x``: a valid
    lower bound lies below it, a valid upper bound above.
    """
    palette = colours or colours_for(measured)
    fig, ax = new_figure(width=5.4, height=4.6)
    shown: list[float] = []
    for label in measured:
        norms = measured[label].double().cpu()
        for bound, marker, name in ((lower[label], "v", "lower"), (upper[label], "^", "upper")):
            bound = bound.double().cpu()
            keep = torch.isfinite(norms) & torch.isfinite(bound) & (norms > 0) & (bound > 0)
            if bool(keep.any()):
                ax.scatter(norms[keep].numpy(), bound[keep].numpy(), marker=marker, s=30,
                           color=palette[label], alpha=0.8, label=f"{label}: {name} bound")
                shown += norms[keep].tolist() + bound[keep].tolist()
    if shown:
        low, high = min(shown) / 1.5, max(shown) * 1.5
        ax.plot([low, high], [low, high], "k--", linewidth=1.0, label="y = x")
        ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high))
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finite positive bounds to show", ha="center", transform=ax.transAxes)
    ax.set(title=title, xlabel="measured minimal perturbation ‖r*‖₂ (DeepFool)",
           ylabel="bound on ‖r*‖₂ (quadratic model)")
    return save_figure(fig, path)


def plot_noise_ratios(ratios: dict[str, Tensor], dim: int, subspace_medians: dict[str, dict[int, float]],
                      path: str | Path, *, reference: dict[str, float] | None = None,
                      title: str = "Random noise vs adversarial perturbations",
                      colours: dict[str, str] | None = None) -> Path:
    """Histogram of ``||r_noise|| / ||r_adv||`` per model with the line ``sqrt(d)`` (left), and
    the median ratio in ``m``-dimensional random subspaces against ``sqrt(d / m)`` (right).

    ``ratios[label]``: ``(N,)`` (``nan`` where undefined, dropped); ``subspace_medians[label]``:
    ``{m: median ratio}`` including ``m = 1`` (a random line) when measured. ``reference``: the
    exact linear-classifier ratio (``median``, ``low``, ``high``:
    :func:`advlab.geometry.profile_plots.linear_noise_reference`), drawn as a grey band.
    """
    palette = colours or colours_for([*ratios, *subspace_medians])
    fig, (left, right) = new_figure(ncols=2, width=4.8, height=4.0)
    for label, values in ratios.items():
        finite = values.double().cpu()
        finite = finite[torch.isfinite(finite)]
        if finite.numel():
            left.hist(finite.numpy(), bins=min(20, max(5, finite.numel())), alpha=0.5,
                      color=palette[label], label=f"{label} (median {float(torch.quantile(finite, 0.5)):.3g}, "
                                                  f"{finite.numel()} of {values.numel()} points)")
    left.axvline(math.sqrt(dim), color="black", linestyle="--", label=f"√d = {math.sqrt(dim):.3g}")
    if reference is not None:
        left.axvspan(reference["low"], reference["high"], color="grey", alpha=0.25,
                     label=f"linear classifier 10-90 % (median {reference['median']:.3g})")
        left.axvline(reference["median"], color="grey", linewidth=1.5)
    left.set(title="per sample, random line", xlabel="‖r_noise‖ / ‖r_adv‖", ylabel="number of points")
    left.legend(fontsize=8)
    predicted_all: list[float] = []
    for label, medians in subspace_medians.items():
        points = sorted((m, value) for m, value in medians.items() if math.isfinite(value))
        if points:
            predicted = [math.sqrt(dim / m) for m, _ in points]
            right.plot(predicted, [value for _, value in points], "o-", color=palette[label], label=label)
            for (m, value), guess in zip(points, predicted):
                right.annotate(f"m={m}", (guess, value), fontsize=7, textcoords="offset points", xytext=(3, 3))
            predicted_all += predicted + [value for _, value in points]
    if predicted_all:
        low, high = min(predicted_all) / 1.5, max(predicted_all) * 1.5
        right.plot([low, high], [low, high], "k--", linewidth=1.0, label="measured = √(d/m)")
        right.set(xscale="log", yscale="log")
        right.legend(fontsize=8)
    right.set(title="median over points, random subspaces", xlabel="prediction √(d/m)",
              ylabel="median ‖r_S‖ / ‖r_adv‖")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_point_sections(sections: list[dict[str, Any]], labels: list[str], curvatures: list[float],
                        path: str | Path, *, point: int, true_class: int, reference: str,
                        boxes: list[dict[str, Any]] | None = None) -> Path:
    """Cross-sections of one test point for every model side by side (one PNG).

    ``sections``: :func:`~advlab.geometry.boundary.cross_section` results, one per model, in the
    order of ``labels``; ``curvatures``: the boundary curvature measured in each; ``point``: the
    index of the test point, ``true_class`` its label, ``reference`` the first model (kept for
    callers; each section is spanned by its own model's DeepFool direction); ``boxes``: the
    :func:`advlab.geometry.box.box_section` of each section, outlined on it.
    """
    titles = [f"{label}: point {point} (class {true_class}), κ = {kappa:.2g}"
              for label, kappa in zip(labels, curvatures)]
    return plot_cross_sections(sections, titles, path,
                               xlabel="α along each model's own DeepFool direction (L2)",
                               ylabel="β along a random orthogonal direction (L2)", boxes=boxes)
