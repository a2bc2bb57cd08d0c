"""The (adversarial direction, top eigenvector) plane step of :func:`advlab.geometry.analysis.analyse`.

On the ``plane_points`` points of ``state.pool`` (the first ones every model classifies
correctly), per model (:mod:`advlab.geometry.eigenplane`): ``u`` its own DeepFool direction,
``v`` the top eigenvector of its cross-entropy curvature at scale ``h`` orthogonalised against
``u``, and the curvature of the loss in that plane, the second difference at step ``h``:

* ``plane_curvature_eigenvector``: along ``v``, ``|l(x+hv) - 2 l(x) + l(x-hv)| / h^2``;
* ``plane_curvature_adversarial``: the same along ``u``;
* ``plane_curvature_shared``: both models along the *first* model's ``v`` (one common direction);
* ``plane_curvature_restricted``: along the top eigenvector of ``P H_h P`` (``P = I - u u^T``), the
  direction orthogonal to ``u`` of largest curvature (``eigen_plane(..., restrict=True)``; the
  top eigenvector of ``H_h`` itself is often close to ``u`` for ReLU networks).

With two models each is a paired row (second / first, :func:`advlab.geometry.stats.paired_ratio`:
median of the per-point ratios, 95 % paired bootstrap interval, ``n``, verdict from the interval
alone), stored in ``summary.curves["eigenvector_plane"]["comparison"]`` and merged into
``summary.comparison``. CURE (Moosavi-Dezfooli et al. 2019) shows the flattening of robust
models in this plane. Figures: the loss and boundary in each model's plane for the first
figure points, and the flattening (per-point scatter, median loss profile with its band).
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from advlab.attacks._core import model_guard, predict
from advlab.attacks.result import AttackResult
from advlab.geometry._common import random_normal
from advlab.geometry.analysis_state import AnalysisState, finite_median
from advlab.geometry.boundary import cross_section
from advlab.geometry.box import box_section, box_summary
from advlab.geometry.eigenplane import eigen_plane, second_difference
from advlab.geometry.hessian import input_gradient
from advlab.geometry.landscape import loss_surface
from advlab.geometry.plane_plots import plot_plane_flattening, plot_plane_sections
from advlab.geometry.stats import paired_ratio
from advlab.threat import flat, per_sample_view

#: Test points whose plane is drawn.
FIGURE_POINTS = 2
#: Rows of the comparison: (name, per-point key, description).
ROWS = (("plane_curvature_eigenvector", "curvature_v",
         "|second difference of the loss| at step h along the top scale-h eigenvector (orthogonal to u), own plane"),
        ("plane_curvature_adversarial", "curvature_u",
         "|second difference of the loss| at step h along the own DeepFool direction u"),
        ("plane_curvature_shared", "curvature_shared",
         "|second difference of the loss| at step h along the first model's eigenvector direction"),
        ("plane_curvature_restricted", "curvature_restricted",
         "|second difference of the loss| at step h along the top eigenvector of P H_h P, P = I - u u^T "
         "(the largest curvature orthogonal to u)"))


def _directions(model: Any, x: Tensor, y: Tensor,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """DeepFool's ``r`` (the loss gradient where it found none) ``(P, ...)``, its norm ``(P,)`` and
    whether the model classifies each point correctly ``(P,)``."""
    from advlab.attacks.deepfool import deepfool

    with model_guard(model):
        correct = predict(model, x).argmax(dim=1) == y
    info = cast(AttackResult, deepfool(model, x, y, norm="l2", return_info=True))
    r = info.x_adv - x
    found = correct & info.success & (flat(r).norm(dim=1) > 0)
    direction = torch.where(per_sample_view(found, x), r, input_gradient(model, x, y))
    flat_loss = flat(direction).norm(dim=1) == 0  # a saturated loss: any direction will do
    if bool(flat_loss.any()):
        other = random_normal(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
        direction = torch.where(per_sample_view(flat_loss, x), other, direction)
    return direction, info.norm, correct


def _measure(state: AnalysisState, x: Tensor, y: Tensor) -> dict[str, dict[str, Tensor]]:
    """Per model: ``u``, ``v``, the eigenvalue, ``cos(u, e1)``, curvatures along ``v`` and ``u``."""
    h = state.params["h"]
    measured: dict[str, dict[str, Tensor]] = {}
    for label, model in state.models.items():
        direction, norm, correct = _directions(model, x, y, state.generator)
        plane = eigen_plane(model, x, y, direction, h=h, generator=state.generator)
        restricted = eigen_plane(model, x, y, direction, h=h, generator=state.generator, restrict=True)
        measured[label] = {**plane, "norm": norm, "correct": correct,
                           "curvature_v": second_difference(model, x, y, plane["v"], step=h),
                           "curvature_u": second_difference(model, x, y, plane["u"], step=h),
                           "curvature_restricted": second_difference(model, x, y, restricted["v"], step=h)}
    first = measured[state.first]
    for label, model in state.models.items():
        measured[label]["curvature_shared"] = second_difference(model, x, y, first["v"], step=h)
    return measured


def _rows(state: AnalysisState, measured: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Any]]:
    if len(measured) != 2:
        return {}
    a, b = (measured[label] for label in state.models)
    both = a["correct"].cpu() & b["correct"].cpu()
    rows = {}
    for name, key, description in ROWS:
        row = paired_ratio(a[key].abs(), b[key].abs(), mask=both, generator=state.generator).to_dict()
        rows[name] = {**row, "step": state.params["h"], "description": description}
    return rows


def eigenvector_plane(state: AnalysisState) -> None:
    """The (DeepFool, top eigenvector at scale h) plane: curvatures, paired rows and figures."""
    if state.dim <= 2 or state.pool is None:
        state.skip("eigenvector_plane", "2-D inputs: the plane is the input plane itself" if state.dim <= 2
                   else "no points for the eigenvector plane")
        return
    x, y = state.pool
    measured = _measure(state, x, y)
    rows = _rows(state, measured)
    norms = torch.stack([m["norm"].double().cpu() for m in measured.values()])  # (M, P)
    norms = torch.where(torch.isfinite(norms), norms, torch.zeros_like(norms)).amax(dim=0)
    fallback = finite_median(norms[norms > 0]) if bool((norms > 0).any()) else 1.0
    extents = state.params["extent_factor"] * torch.where(norms > 0, norms, torch.full_like(norms, fallback))
    per_point = {label: {key: m[key] for key in ("eigenvalue", "cosine", "used_second", "curvature_v",
                                                 "curvature_u", "curvature_shared", "curvature_restricted",
                                                 "correct")}
                 for label, m in measured.items()}
    state.summary.curves["eigenvector_plane"] = {
        "points": len(x), "step": state.params["h"], "h": state.params["h"], "per_point": per_point,
        "comparison": rows, "median_cosine": {label: finite_median(m["cosine"]) for label, m in measured.items()}}
    for label, m in measured.items():
        state.aggregate(label, median_plane_curvature_eigenvector=finite_median(m["curvature_v"].abs()),
                        median_plane_curvature_adversarial=finite_median(m["curvature_u"].abs()))
    for i in range(min(FIGURE_POINTS, len(x))):
        _section_figure(state, measured, x, y, i, float(extents[i]))
    _flattening_figure(state, measured, x, y, rows, finite_median(extents))


def _section_figure(state: AnalysisState, measured: dict[str, dict[str, Tensor]], x: Tensor, y: Tensor,
                    i: int, extent: float) -> None:
    panels = []
    resolution = state.params["resolution"]
    for label, model in state.models.items():
        u, v = measured[label]["u"][i], measured[label]["v"][i]
        section = cross_section(model, x[i], u, v, extent=extent, resolution=resolution)
        surface = loss_surface(model, x[i:i + 1], y[i:i + 1], u[None], v[None], section["offsets1"],
                               section["offsets2"])
        box = box_section(x[i], u, v, extent=extent)
        panels.append({"label": label, "loss": surface["loss"][..., 0], "section": section, "box": box,
                       "curvature": float(measured[label]["curvature_v"][i])})
    name = f"eigenvector_plane_{i}"
    state.summary.curves.setdefault("boxes", {})[name] = {
        p["label"]: {"vertices": p["box"]["vertices"], "fraction": p["box"]["fraction"]} for p in panels}
    path = plot_plane_sections(panels, state.png(name), point=i, true_class=int(y[i]))
    boxes = "; ".join(f"{p['label']}: {box_summary(p['box'])}" for p in panels)
    state.figure(name, path,
                 f"Cross-entropy (log colour scale) and decision boundary (black) of each model in its own "
                 f"plane through eigenvector-plane point {i} (true class {int(y[i])}; n = 1 point per panel): "
                 f"horizontal its DeepFool direction u, vertical the top eigenvector of its curvature at "
                 f"scale h = {state.params['h']:g} orthogonalised against u; dashed white: the [0, 1] box "
                 f"({boxes}). The number is the second difference of the loss along v at step h.")


def _flattening_figure(state: AnalysisState, measured: dict[str, dict[str, Tensor]], x: Tensor, y: Tensor,
                       rows: dict[str, dict[str, Any]], extent: float) -> None:
    offsets = torch.linspace(0.0, extent, 21)
    rises = {}
    for label, model in state.models.items():
        v = measured[label]["v"]
        both = torch.cat([offsets, -offsets])
        surface = loss_surface(model, x, y, v, None, both, torch.zeros(1), generator=state.generator)
        loss = surface["loss"][0].double()  # (2A, P)
        rises[label] = (loss[:len(offsets)] + loss[len(offsets):]) / 2 - loss[:1]
    curvatures = {label: m["curvature_v"] for label, m in measured.items()}
    row = rows.get("plane_curvature_eigenvector")
    path = plot_plane_flattening(curvatures, rises, offsets, row, state.png("eigenvector_plane_flattening"),
                                 colours=state.palette)
    state.figure("eigenvector_plane_flattening", path,
                 f"Curvature of the loss in each model's (DeepFool direction, top eigenvector at scale h = "
                 f"{state.params['h']:g}) plane on n = {len(x)} test points: {_row_words(state, row)} "
                 "Right: the even part of the loss along v, (l(x + βv) + l(x − βv)) / 2 − l(x), median and "
                 "10-90 % band over the points, one colour per run.")


def _row_words(state: AnalysisState, row: dict[str, Any] | None) -> str:
    if row is None:
        return "one model, no comparison."
    first, second = state.models
    lo, hi = row["ci"]
    return (f"left, |second difference along v at step h| of {second} against {first}, median per-point "
            f"ratio {_fmt(row['ratio'])} [95 % paired bootstrap CI {_fmt(lo)}, {_fmt(hi)}], n = {row['n']} "
            f"points both classify correctly: {row['verdict']} (medians {_fmt(row['a_median'])} and "
            f"{_fmt(row['b_median'])}).")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def plane_lines(summary: Any) -> list[str]:
    """Printable lines of the eigenvector-plane rows of ``summary`` ([] when there are none)."""
    plane = summary.curves.get("eigenvector_plane", {})
    rows = plane.get("comparison") or {}
    if not rows:
        return []
    first, second = summary.models
    lines = [f"{second} / {first} in the (DeepFool, top eigenvector at h = {plane['h']:g}) plane, "
             f"{plane['points']} points (95 % paired bootstrap):"]
    for name, row in rows.items():
        said = f"{second} {row['verdict']}" if row["verdict"] in ("lower", "higher") else row["verdict"]
        lines.append(f"{name}: {_fmt(row['ratio'])} [{_fmt(row['ci'][0])}, {_fmt(row['ci'][1])}] "
                     f"n={row['n']}: {said}")
    return lines
