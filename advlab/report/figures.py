"""Figures drawn from stored records: robustness curves, training curves, perturbation histograms,
and the adversarial-example gallery. Matplotlib with the Agg canvas (no display, no pyplot state).

Every chart takes ``names``, the full list of run names of the report, and draws run ``r`` in
``run_colours(names)[r]``: one run has one colour in every chart, whichever runs a chart has data
for. Titles are wrapped and crowded ticks thinned when saved (:func:`save_figure`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advlab.report.plotting import (
    DPI,
    LEGEND_INSIDE_MAX,
    add_legend,
    new_figure,
    run_colours,
    save_figure,
    wrap,
)

__all__ = ["DPI", "gallery", "norm_histograms", "robustness_curves", "run_colours", "training_curves"]


def robustness_curves(evaluations: dict[str, list[dict[str, Any]]], path: Path, *,
                      names: Sequence[str] | None = None) -> Path | None:
    """Robust accuracy vs eps, one line per model, one panel per norm.

    ``evaluations``: run name -> "evaluate" results (dicts with norm, eps, robust_accuracy).
    ``names``: every run name of the report, for the colours (default: the keys).
    """
    by_norm: dict[str, dict[str, list[tuple[float, float, float]]]] = defaultdict(dict)
    for run, results in evaluations.items():
        for r in results:
            by_norm[r["norm"]].setdefault(run, []).append((r["eps"], r["robust_accuracy"], r["clean_accuracy"]))
    if not by_norm:
        return None
    colours = run_colours([*(names or ()), *evaluations])
    fig, axes = new_figure(ncols=len(by_norm), width=5.2, height=3.8, squeeze=False)
    for ax, (norm, runs) in zip(axes[0], sorted(by_norm.items())):
        for run, points in sorted(runs.items()):
            best: dict[float, tuple[float, float]] = {}
            for eps, robust, clean in points:  # several evaluations of one eps: keep the worst case
                best[eps] = min(best.get(eps, (robust, clean)), (robust, clean))
            eps_values = [0.0, *sorted(best)]
            accs = [max(c for _, c in best.values()), *(best[e][0] for e in sorted(best))]
            ax.plot(eps_values, [100 * a for a in accs], marker="o", label=run, color=colours[run])
        ax.set_xlabel(f"{norm} radius eps")
        ax.set_ylabel("accuracy under attack (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(f"Robust accuracy vs {norm} eps (worst case)")
        add_legend(ax)
    return save_figure(fig, path)


#: Accuracy series of the training curves -> (line style, legend label).
_ACCURACY_STYLES = {"val_acc": ("-", "validation"), "train_acc": (":", "training"),
                    "adv_val_acc": ("--", "adversarial validation")}


def training_curves(metrics: dict[str, list[dict[str, Any]]], path: Path, *,
                    names: Sequence[str] | None = None) -> Path | None:
    """Loss and accuracy per epoch for every run (clean and, when recorded, adversarial).

    The colour says the run, the line style the accuracy series (solid validation, dotted
    training, dashed adversarial validation): the loss panel's legend names the runs, the accuracy
    panel's the line styles.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    runs = {name: rows for name, rows in metrics.items() if rows}
    if not runs:
        return None
    colours = run_colours([*(names or ()), *runs])
    fig, axes = new_figure(ncols=2, width=5.5, height=3.8, squeeze=False)
    loss_ax, acc_ax = axes[0]
    used: set[str] = set()
    for name, rows in sorted(runs.items()):
        epochs = [r["epoch"] for r in rows]
        loss_ax.plot(epochs, [r["metrics"].get("train_loss", math.nan) for r in rows], marker="o",
                     label=name, color=colours[name])
        for key, (style, _) in _ACCURACY_STYLES.items():
            values = [r["metrics"].get(key) for r in rows]
            if any(v is not None for v in values):
                used.add(key)
                acc_ax.plot(epochs, [100 * v if v is not None else math.nan for v in values],
                            style, marker="o", markersize=4, color=colours[name])
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss per epoch")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Clean (and adversarial) accuracy per epoch")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    add_legend(loss_ax)
    styles = [Line2D([], [], color="0.3", linestyle=_ACCURACY_STYLES[k][0], label=_ACCURACY_STYLES[k][1])
              for k in _ACCURACY_STYLES if k in used]
    acc_ax.legend(handles=styles, fontsize=7, loc="best", title="colour: run, as on the left",
                  title_fontsize=7)
    return save_figure(fig, path)


def norm_histograms(stats: dict[str, dict[str, Any]], path: Path, *,
                    names: Sequence[str] | None = None) -> Path | None:
    """Histograms of minimal adversarial perturbation norms, one colour per model, on shared bins."""
    runs = {name: s for name, s in stats.items() if s.get("norms")}
    if not runs:
        return None
    colours = run_colours([*(names or ()), *runs])
    finite = {name: np.array([n for n in s["norms"] if n is not None and 0 < n < math.inf])
              for name, s in sorted(runs.items())}
    pooled = np.concatenate([np.zeros(0), *finite.values()])
    bins = np.histogram_bin_edges(pooled, bins=30) if len(pooled) else 30
    below = len(runs) > LEGEND_INSIDE_MAX  # the legend goes below the axes: make it room
    fig, axes = new_figure(width=6.5, height=3.8 + (0.2 * len(runs) if below else 0.0), squeeze=False)
    ax = axes[0][0]
    for name, norms in finite.items():
        if len(norms):
            ax.hist(norms, bins=bins, alpha=0.5, color=colours[name], edgecolor=colours[name],
                    label=f"{name} (median {np.median(norms):.3g}, rho_adv {runs[name].get('rho_adv', math.nan):.3g})")
    norm = next(iter(runs.values())).get("norm", "l2")
    attack = next(iter(runs.values())).get("attack", "deepfool")
    ax.set(xlabel=f"minimal {norm} perturbation ({attack})", ylabel="test points",
           title=f"Minimal adversarial perturbations ({attack}, {norm})")
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # head-room for the legend above the bars
    add_legend(ax)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def gallery(x: np.ndarray, x_adv: np.ndarray, labels: Sequence[str], adv_labels: Sequence[str],
            confidences: Sequence[float], adv_confidences: Sequence[float], path: Path,
            title: str) -> Path:
    """Clean image, amplified perturbation and adversarial image with labels and confidences.

    ``x``, ``x_adv``: ``(K, C, H, W)`` in [0, 1]. The perturbation is rescaled to fill [0, 1]
    (mid-grey is zero) so that small changes are visible -- the "panda to gibbon" figure of
    Goodfellow et al. (2015).
    """
    k = len(x)
    fig, axes = new_figure(ncols=3, nrows=k, width=2.2, height=2.2, squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i in range(k):
        delta = x_adv[i] - x[i]
        scale = max(float(np.abs(delta).max()), 1e-12)
        panels = [(x[i], wrap(f"{labels[i]} ({100 * confidences[i]:.0f}%)", 26)),
                  (0.5 + 0.5 * delta / scale, f"perturbation x{0.5 / scale:.0f}"),
                  (x_adv[i], wrap(f"{adv_labels[i]} ({100 * adv_confidences[i]:.0f}%)", 26))]
        for ax, (img, caption) in zip(axes[i], panels):
            ax.imshow(np.transpose(np.clip(img, 0, 1), (1, 2, 0)).squeeze(), cmap=cmap, vmin=0, vmax=1)
            ax.set_title(caption, fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
