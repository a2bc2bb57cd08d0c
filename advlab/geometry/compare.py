"""Compare the geometry of two models point by point, with paired bootstrap intervals.

    cmp = geometry.compare(standard, robust, x, y, generator=torch.Generator().manual_seed(0))
    cmp.rows["top_eigenvalue"]   # {"a_median", "b_median", "ratio", "ci": [lo, hi], "n", "verdict"}
    print("\\n".join(cmp.lines()))

Each quantity is measured on every point for both models; its row is the median over the points
both models classify correctly of the per-point ratio ``b / a``, with a 95 % percentile-bootstrap
interval (:mod:`advlab.geometry.stats`). ``verdict`` says ``"lower"`` / ``"higher"`` only when
the interval excludes 1. Quantities (:data:`QUANTITIES`):

* ``top_eigenvalue``: largest eigenvalue of the cross-entropy curvature at scale ``h``
  (:mod:`advlab.geometry.scale`); ``top_eigenvalue_pointwise``: of the exact Hessian;
  ``top_eigenvalue_normalised``: the pointwise one over ``1 - p_y``;
* ``hessian_frobenius``: ``||H||_F^2`` (exact for ``d <= 256``, else Hutchinson with its error);
* ``boundary_curvature``: ``|kappa| * r`` in each model's own DeepFool plane (Fawzi et al. 2018);
* ``minimal_l2``: DeepFool's ``||r*||``; ``noise_ratio``: random-direction flip distance over
  ``||r*||`` (Fawzi et al. 2016), clipped to the box or not (``clip``);
* ``adversarial_vs_random_curvature``: ``u^T H_h u / v^T H_h v`` (DeepFool direction vs random).

The per-point values are measured in blocks (:mod:`advlab.geometry.compare_blocks`), each point
with its own random stream seeded from the generator's seed and the point's index; inside a
process group the ranks share the blocks and rank 0 computes the rows, so the result is the
same for any number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlab._dist import current_context, on_main
from advlab._utils import json_safe
from advlab.geometry._common import check_batch
from advlab.geometry.compare_blocks import measure_points
from advlab.geometry.stats import paired_ratio

logger = logging.getLogger(__name__)

QUANTITIES = ("top_eigenvalue", "top_eigenvalue_pointwise", "top_eigenvalue_normalised",
              "hessian_frobenius", "boundary_curvature", "minimal_l2", "noise_ratio",
              "adversarial_vs_random_curvature")

#: What each quantity is, for the printed table and the report.
DESCRIPTIONS = {
    "top_eigenvalue": "top eigenvalue of the loss curvature at scale h",
    "top_eigenvalue_pointwise": "top eigenvalue of the pointwise input Hessian",
    "top_eigenvalue_normalised": "pointwise top eigenvalue / (1 - p_y)",
    "hessian_frobenius": "||H||_F^2 of the pointwise input Hessian",
    "boundary_curvature": "|boundary curvature| x distance, own DeepFool plane",
    "minimal_l2": "DeepFool minimal L2 perturbation",
    "noise_ratio": "random-direction / DeepFool flip distance",
    "adversarial_vs_random_curvature": "u^T H_h u / v^T H_h v (adversarial vs random)",
}


@dataclass
class Comparison:
    """The rows of :func:`compare` and the per-point values behind them (JSON-ready by :meth:`to_dict`)."""

    labels: tuple[str, str]
    rows: dict[str, dict[str, Any]]
    points: int
    both_correct: int
    params: dict[str, Any]
    per_point: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"labels": list(self.labels), "rows": self.rows, "points": self.points,
                          "both_correct": self.both_correct, "params": self.params,
                          "per_point": self.per_point, "timings": self.timings})

    def lines(self) -> list[str]:
        """One line per quantity; a difference is named only where the interval excludes 1."""
        a, b = self.labels
        out = [f"{b} / {a}: median of per-point ratios on the {self.both_correct} of {self.points} "
               "points both classify correctly, 95 % paired bootstrap interval"]
        for name, row in self.rows.items():
            lo, hi = row["ci"]
            if row["verdict"] == "no significant difference":
                said = "no significant difference (the interval contains 1)"
            else:
                said = f"{b} {row['verdict']}"
            extra = f"; {row['method']}" if "method" in row else ""
            out.append(f"{name:<32} {row['ratio']:.3g} [{lo:.3g}, {hi:.3g}] n={row['n']}: {said}{extra}")
        return out


def _check(model_a: nn.Module, model_b: nn.Module, x: Tensor, y: Tensor, quantities: Sequence[str]) -> None:
    if not (isinstance(model_a, nn.Module) and isinstance(model_b, nn.Module)):
        raise TypeError("model_a and model_b must be torch.nn.Module classifiers")
    check_batch(x, y)
    if y is None or len(x) < 2:
        raise ValueError("compare needs labels y and at least 2 points (100 or more for a useful interval)")
    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown:
        raise ValueError(f"unknown quantities {unknown}; choose from {list(QUANTITIES)}")


def compare(model_a: nn.Module, model_b: nn.Module, x: Tensor, y: Tensor, *,
            generator: torch.Generator | None = None, labels: tuple[str, str] = ("a", "b"),
            quantities: Sequence[str] = QUANTITIES, h: float = 0.5, steps: int = 20,
            hutchinson_samples: int = 32, resolution: int = 31, directions: int = 10,
            clip: bool = True, resamples: int = 2000, batch_size: int = 32) -> Comparison:
    """Measure ``quantities`` for both models on the points ``x`` ``(N, ...)``, ``y`` ``(N,)``.

    Args:
        model_a, model_b: classifiers on the same inputs; ratios are ``b / a``.
        generator: its seed (``generator.initial_seed()``) seeds every point's own random
            stream from the point's index (Lanczos starts, probes, lines, directions:
            :mod:`advlab.streams`), and the bootstrap on a CPU generator seeded with it;
            its state is not advanced. ``None``: torch's global RNG, every point at once (one
            process; under a process group each rank's global RNG, not reproducible).
        labels: names of the two models in the rows' text.
        quantities: subset of :data:`QUANTITIES`.
        h: the scale of ``top_eigenvalue`` and of the curvature ratio (L2, input units).
        steps: Lanczos steps for the top eigenvalues.
        hutchinson_samples: probes per point when ``d > 256``.
        resolution: grid per axis of the cross-sections.
        directions: random lines per point for the noise ratio (>= 10 recommended).
        clip: whether ``noise_ratio`` keeps the probes in [0, 1]; the other variant is also
            reported, as ``noise_ratio_unclipped`` / ``noise_ratio_clipped``.
        resamples: bootstrap resamples.
        batch_size: points measured together (a block); under a process group the ranks take
            whole blocks round-robin. The values are bit-identical for any number of processes
            at one ``batch_size`` (another block shape may round differently).

    Inside an initialised process group every rank must call this with the same arguments: each
    measures its blocks, rank 0 gathers them and computes the rows, and every rank returns rank
    0's :class:`Comparison`.

    Returns:
        a :class:`Comparison`; ``rows[name]`` has ``a_median``, ``b_median``, ``ratio``, ``ci``,
        ``n`` and ``verdict`` (see :mod:`advlab.geometry.stats`).
    """
    _check(model_a, model_b, x, y, quantities)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (points measured together), got {batch_size!r}")
    options = {"h": h, "steps": steps, "hutchinson_samples": hutchinson_samples,
               "resolution": resolution, "directions": directions, "clip": clip}
    context = current_context()
    seed = generator.initial_seed() if generator is not None else None
    block = batch_size if seed is not None or context.enabled else len(x)  # None, one process: as before
    measured = measure_points((model_a, model_b), labels, x, y, quantities=quantities, options=options,
                              seed=seed, batch_size=block, context=context)
    def summarise() -> Comparison:
        assert measured is not None
        result = _comparison(labels, *measured, points=len(x), params=options, resamples=resamples,
                             bootstrap=torch.Generator().manual_seed(seed) if seed is not None else None)
        result.params["batch_size"] = block
        return result

    return on_main(summarise, context, "compare")


def _comparison(labels: tuple[str, str], correct: Tensor, per_point: dict[str, dict[str, Any]],
                timings: dict[str, float], *, points: int, params: dict[str, Any], resamples: int,
                bootstrap: torch.Generator | None) -> Comparison:
    """The rows from the gathered per-point values (rank 0): paired ratios, intervals, verdicts."""
    rows: dict[str, dict[str, Any]] = {}
    for name in list(per_point[labels[0]]):
        if name.startswith("_") or name.endswith("_error"):
            continue
        a, b = per_point[labels[0]][name], per_point[labels[1]][name]
        row = paired_ratio(a, b, mask=correct, resamples=resamples, generator=bootstrap).to_dict()
        row["description"] = DESCRIPTIONS.get(name, name.replace("_", " "))
        if name == "hessian_frobenius":
            row["method"] = per_point[labels[0]].pop("_frobenius_method")
            per_point[labels[1]].pop("_frobenius_method", None)
            for label in labels:
                err = per_point[label]["hessian_frobenius_error"]
                rel = (err / per_point[label]["hessian_frobenius"].abs().clamp_min(1e-300))[correct]
                row[f"{label}_median_relative_error"] = float(torch.quantile(rel.double(), 0.5)) if rel.numel() else None
        rows[name] = row
    logger.info("compare: %d points, %d both correct", points, int(correct.sum()))
    return Comparison(labels=(labels[0], labels[1]), rows=rows, points=points, both_correct=int(correct.sum()),
                      params=params, per_point=per_point, timings=timings)
