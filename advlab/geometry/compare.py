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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import json_safe
from advlab.attacks._core import model_guard, predict
from advlab.geometry import compare_measures as measures
from advlab.geometry._common import check_batch
from advlab.geometry.lanczos import hessian_eigs
from advlab.geometry.scale import confidence_normalised, scale_hessian_eigs
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


def _measure(model: nn.Module, x: Tensor, y: Tensor, second: Tensor, quantities: Sequence[str],
             options: dict[str, Any], generator: torch.Generator | None,
             timings: dict[str, float]) -> dict[str, Tensor]:
    """Every requested quantity of one model, per point."""
    values: dict[str, Tensor] = {}

    def timed(name: str, fn: Any) -> None:
        started = time.perf_counter()
        values[name] = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

    info = measures.deepfool_info(model, x, y)
    norms = torch.where(info.success, info.norm, torch.full_like(info.norm, float("nan"))).double().cpu()
    direction = info.x_adv - x
    h, steps = options["h"], options["steps"]
    wanted = set(quantities)
    if "minimal_l2" in wanted:
        values["minimal_l2"] = norms
    if "top_eigenvalue" in wanted:
        timed("top_eigenvalue", lambda: scale_hessian_eigs(model, x, y, 1, h=h, steps=steps,
                                                           generator=generator)[:, 0].double().cpu())
    if wanted & {"top_eigenvalue_pointwise", "top_eigenvalue_normalised"}:
        pointwise = hessian_eigs(model, x, y, 1, steps=steps, which="LA", generator=generator)[0][:, 0]
        values["top_eigenvalue_pointwise"] = pointwise.double().cpu()
        values["top_eigenvalue_normalised"] = confidence_normalised(model, x, y, pointwise).double().cpu()
    if "hessian_frobenius" in wanted:
        started = time.perf_counter()
        value, error, method = measures.frobenius(model, x, y, samples=options["hutchinson_samples"],
                                                  generator=generator)
        values["hessian_frobenius"], values["hessian_frobenius_error"] = value.cpu(), error.cpu()
        values["_frobenius_method"] = method  # type: ignore[assignment]
        timings["hessian_frobenius"] = timings.get("hessian_frobenius", 0.0) + time.perf_counter() - started
    if "boundary_curvature" in wanted:
        timed("boundary_curvature", lambda: measures.boundary_curvatures(
            model, x, direction, norms, second, resolution=options["resolution"]))
    if "noise_ratio" in wanted:
        for clip in (True, False):
            key = "noise_ratio" if clip == options["clip"] else ("noise_ratio_clipped" if clip else "noise_ratio_unclipped")
            timed(key, lambda clip=clip: measures.noise_distances(
                model, x, y, directions=options["directions"], clip=clip, generator=generator) / norms)
    if "adversarial_vs_random_curvature" in wanted:
        safe = torch.where((direction.flatten(1).norm(dim=1) > 0)[(...,) + (None,) * (x.dim() - 1)],
                           direction, second)
        timed("adversarial_vs_random_curvature", lambda: measures.curvature_ratio(
            model, x, y, safe, h=h, generator=generator).cpu())
    return values


def compare(model_a: nn.Module, model_b: nn.Module, x: Tensor, y: Tensor, *,
            generator: torch.Generator | None = None, labels: tuple[str, str] = ("a", "b"),
            quantities: Sequence[str] = QUANTITIES, h: float = 0.5, steps: int = 20,
            hutchinson_samples: int = 32, resolution: int = 31, directions: int = 10,
            clip: bool = True, resamples: int = 2000) -> Comparison:
    """Measure ``quantities`` for both models on the points ``x`` ``(N, ...)``, ``y`` ``(N,)``.

    Args:
        model_a, model_b: classifiers on the same inputs; ratios are ``b / a``.
        generator: every random draw (Lanczos starts, probes, directions, bootstrap).
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

    Returns:
        a :class:`Comparison`; ``rows[name]`` has ``a_median``, ``b_median``, ``ratio``, ``ci``,
        ``n`` and ``verdict`` (see :mod:`advlab.geometry.stats`).
    """
    _check(model_a, model_b, x, y, quantities)
    options = {"h": h, "steps": steps, "hutchinson_samples": hutchinson_samples,
               "resolution": resolution, "directions": directions, "clip": clip}
    with model_guard(model_a), model_guard(model_b):
        correct = (predict(model_a, x).argmax(1) == y) & (predict(model_b, x).argmax(1) == y)
    second = torch.randn(x.shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)
    timings: dict[str, float] = {}
    per_point = {label: _measure(model, x, y, second, quantities, options, generator, timings)
                 for label, model in zip(labels, (model_a, model_b))}
    rows: dict[str, dict[str, Any]] = {}
    for name in list(per_point[labels[0]]):
        if name.startswith("_") or name.endswith("_error"):
            continue
        a, b = per_point[labels[0]][name], per_point[labels[1]][name]
        row = paired_ratio(a, b, mask=correct.cpu(), resamples=resamples, generator=generator).to_dict()
        row["description"] = DESCRIPTIONS.get(name, name.replace("_", " "))
        if name == "hessian_frobenius":
            row["method"] = per_point[labels[0]].pop("_frobenius_method")
            per_point[labels[1]].pop("_frobenius_method", None)
            for label in labels:
                err = per_point[label]["hessian_frobenius_error"]
                rel = (err / per_point[label]["hessian_frobenius"].abs().clamp_min(1e-300))[correct.cpu()]
                row[f"{label}_median_relative_error"] = float(torch.quantile(rel.double(), 0.5)) if rel.numel() else None
        rows[name] = row
    logger.info("compare: %d points, %d both correct", len(x), int(correct.sum()))
    return Comparison(labels=(labels[0], labels[1]), rows=rows, points=len(x), both_correct=int(correct.sum()),
                      params=options, per_point=per_point, timings=timings)
