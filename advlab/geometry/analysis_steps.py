"""The steps of :func:`advlab.geometry.analysis.analyse`; each fills the shared ``AnalysisState``.

This module: minimal perturbations and the common plane, cross-sections (and 2-D decision
regions), input- and weight-space landscapes, and :data:`STEPS`, the order of all steps; the
Hessian, curvature-bound and noise steps are in :mod:`advlab.geometry.analysis_curvature`.

Every step loops over the models on the same points ``x`` ``(N, ...)`` and records per-sample
tensors ``(N,)`` (or ``(N, k)``), per-model aggregates, curves, figures with captions, and the
analyses it skipped with the reason. See the papers cited in :mod:`advlab.geometry.analysis`.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from advlab.attacks._core import model_guard, predict
from advlab.attacks.result import AttackResult
from advlab.geometry._common import orthonormal_pair, random_normal
from advlab.geometry.analysis_curvature import curvature_bounds_step, hessian, noise_ratios
from advlab.geometry.analysis_plane import eigenvector_plane
from advlab.geometry.analysis_plots import plot_point_sections
from advlab.geometry.analysis_state import AnalysisState, finite_median
from advlab.geometry.boundary import (
    cross_section,
    decision_regions_2d,
    section_curvature,
)
from advlab.geometry.box import box_section, box_summary
from advlab.geometry.hessian import input_gradient
from advlab.geometry.landscape import (
    filter_normalized_direction,
    loss_line,
    loss_surface,
    plot_loss_curves,
    plot_loss_surface,
    weight_landscape_1d,
    weight_landscape_2d,
)
from advlab.threat import flat, per_sample_view

#: Cross-sections drawn as figures (the curvature is measured on every point).
FIGURE_POINTS = 3


def minimal_perturbations(state: AnalysisState) -> None:
    """DeepFool L2 per model: norms, ``rho_adv``; then the shared plane and cross-section sizes."""
    from advlab.attacks.deepfool import deepfool, rho_adv

    x, y = state.x, state.y
    perturbation: Tensor | None = None
    for label, model in state.models.items():
        with model_guard(model):
            correct = predict(model, x).argmax(dim=1) == y  # (N,)
        info = cast(AttackResult, deepfool(model, x, y, norm="l2", return_info=True))
        found = correct & info.success
        state.norms[label] = info.norm
        state.perturbations[label] = torch.where(per_sample_view(found, x), info.x_adv - x, torch.zeros_like(x))
        state.record(label, correct=correct, deepfool_norm=info.norm,
                     deepfool_relative=info.norm / flat(x).norm(dim=1).clamp_min(1e-12))
        state.aggregate(label, clean_accuracy=float(correct.float().mean()),
                        deepfool_success_rate=float(found.sum() / correct.sum().clamp_min(1)),
                        median_deepfool_norm=finite_median(info.norm[found]),
                        rho_adv=rho_adv(x, info.x_adv, success=found))
        perturbation = info.x_adv - x if perturbation is None else perturbation
    assert perturbation is not None
    _set_plane(state, perturbation)


def _set_plane(state: AnalysisState, perturbation: Tensor) -> None:
    """``u``: the first model's DeepFool direction (its loss gradient where DeepFool found none);
    ``v``: a random direction orthogonal to ``u``; half-widths from the largest DeepFool norm."""
    x, y = state.x, state.y
    gradient = input_gradient(state.models[state.first], x, y)
    direction = torch.where(per_sample_view(flat(perturbation).norm(dim=1) > 0, x), perturbation, gradient)
    random = random_normal(tuple(x.shape), generator=state.generator, device=x.device, dtype=x.dtype)
    if bool((flat(direction).norm(dim=1) == 0).any()):  # a flat loss: any direction will do
        other = random_normal(tuple(x.shape), generator=state.generator, device=x.device, dtype=x.dtype)
        direction = torch.where(per_sample_view(flat(direction).norm(dim=1) > 0, x), direction, other)
    state.u, state.v = orthonormal_pair(direction, random)
    norms = torch.stack([n.to(x.device) for n in state.norms.values()])  # (M, N)
    usable = torch.isfinite(norms) & (norms > 0)
    largest = torch.where(usable, norms, torch.zeros_like(norms)).amax(dim=0)  # (N,)
    fallback = finite_median(norms[usable])
    fallback = fallback if math.isfinite(fallback) else 1.0
    state.extents = state.params["extent_factor"] * torch.where(largest > 0, largest, fallback)


def _own_direction(state: AnalysisState, label: str, i: int) -> Tensor:
    """Model ``label``'s DeepFool direction at point ``i`` (the shared ``u`` where it found none)."""
    assert state.u is not None
    own = state.perturbations.get(label)
    if own is None or float(own[i].norm()) == 0:
        return state.u[i]
    return own[i]


def cross_sections(state: AnalysisState) -> None:
    """One section per point and model, each in the plane of *its own* DeepFool direction and a
    random direction shared by the models; curvature and crossing per point."""
    assert state.u is not None and state.v is not None and state.extents is not None
    measured: dict[str, list[tuple[float, float]]] = {label: [] for label in state.models}
    for i in range(len(state.x)):
        sections = [cross_section(model, state.x[i], _own_direction(state, label, i), state.v[i],
                                  extent=float(state.extents[i]), resolution=state.params["resolution"])
                    for label, model in state.models.items()]
        for label, section in zip(state.models, sections):
            measured[label].append(section_curvature(section))
        if i < FIGURE_POINTS and state.dim > 2:
            _section_figure(state, i, sections, [measured[label][i][0] for label in state.models])
    for label, rows in measured.items():
        curvature = torch.tensor([r[0] for r in rows], dtype=torch.float64)
        crossing = torch.tensor([r[1] for r in rows], dtype=torch.float64)
        finite = curvature[torch.isfinite(curvature)]
        state.record(label, boundary_curvature=curvature, boundary_distance_along_u=crossing)
        state.aggregate(label, mean_boundary_curvature=float(finite.mean()) if finite.numel() else math.nan,
                        median_normalised_curvature=finite_median((curvature * crossing).abs()))
    if state.dim == 2:
        state.skip("cross_section_figures", "2-D inputs: a cross-section is the input plane itself, "
                                            "drawn as decision regions instead")
        _decision_region_figures(state)


def _section_figure(state: AnalysisState, i: int, sections: list[dict[str, Any]],
                    curvatures: list[float]) -> None:
    """Cross-sections of point ``i`` for every model side by side, with the input box, recorded
    with a caption."""
    true_class = int(state.y[i])
    name = f"cross_section_{i}"
    boxes = record_boxes(state, name, state.x[i], sections)
    path = plot_point_sections(sections, list(state.models), curvatures, state.png(name),
                               point=i, true_class=true_class, reference=state.first, boxes=boxes)
    state.figure(name, path,
                 f"Decision regions of {' and '.join(state.models)} in the plane through test point "
                 f"{i} (true class {true_class}; n = 1 point per panel, the curvature of all "
                 f"{len(state.x)} points is in summary.json), each spanned by its own DeepFool direction "
                 "(horizontal) and a shared random direction orthogonalised against it (vertical), in L2 "
                 "units; the black line is the boundary of the point's predicted class, the dashed white "
                 f"line the [0, 1] box ({_box_words(state.models, boxes)}); κ is the boundary curvature "
                 "at the crossing.")


def record_boxes(state: AnalysisState, name: str, x0: Tensor, sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The [0, 1] box cut by each section's plane (:func:`box_section`), recorded in
    ``summary.curves["boxes"][name]`` as ``{label: {"vertices", "fraction"}}``."""
    boxes = [box_section(x0, section["u"], section["v"], extent=section["extent"]) for section in sections]
    state.summary.curves.setdefault("boxes", {})[name] = {
        label: {"vertices": box["vertices"], "fraction": box["fraction"]}
        for label, box in zip(state.models, boxes)}
    return boxes


def _box_words(labels: Any, boxes: list[dict[str, Any]]) -> str:
    return "; ".join(f"{label}: {box_summary(box)}" for label, box in zip(labels, boxes))


def _decision_region_figures(state: AnalysisState) -> None:
    """For 2-D inputs: each model's decision regions with the training points (``state.train_xy``)."""
    if state.train_xy is None:
        state.skip("decision_regions", "2-D inputs but no training points were passed (train_xy)")
        return
    x_train, y_train = state.train_xy
    for label, model in state.models.items():
        path = decision_regions_2d(model, x_train, y_train, state.png(f"decision_regions_{label}"),
                                   title=f"{label}: decision regions and training points")
        state.figure(f"decision_regions_{label}", path,
                     f"Predicted class of {label} over the input square (shaded) with the n = "
                     f"{len(x_train)} training points coloured by their label.")


def _own_directions(state: AnalysisState, label: str) -> Tensor:
    """Model ``label``'s DeepFool directions ``(N, ...)`` (the shared ``u`` where it found none)."""
    return torch.stack([_own_direction(state, label, i) for i in range(len(state.x))])


def input_landscape(state: AnalysisState) -> None:
    """Per-sample loss along each model's own DeepFool direction ``u`` and the random direction
    ``v`` (1-D), and the mean loss over their plane (2-D)."""
    assert state.u is not None and state.v is not None and state.extents is not None
    scale = finite_median(state.extents)
    offsets, grid = torch.linspace(-scale, scale, 41), torch.linspace(-scale, scale, 21)
    curves: dict[str, Any] = {"offsets": offsets, "grid": grid, "models": {}}
    lines, names, colours = [], [], []
    n = len(state.x)
    for label, model in state.models.items():
        own, random = orthonormal_pair(_own_directions(state, label), state.v)
        along_u = loss_line(model, state.x, state.y, own, offsets)
        along_v = loss_line(model, state.x, state.y, random, offsets)
        surface = loss_surface(model, state.x, state.y, own, random, grid, grid)
        state.record(label, loss_along_adversarial=along_u["loss"].T, loss_along_random=along_v["loss"].T)
        curves["models"][label] = {"adversarial": along_u["loss"].double().quantile(0.5, dim=1),
                                   "random": along_v["loss"].double().quantile(0.5, dim=1),
                                   "surface": surface["loss"].double().mean(dim=2)}
        lines += [along_u, along_v]
        names += [f"{label}: DeepFool direction", f"{label}: random direction"]
        colours += [state.colour(label)] * 2
        path = plot_loss_surface(surface, state.png(f"input_loss_surface_{label}"),
                                 title=f"{label}: input-space loss around the test points",
                                 xlabel=f"α along the DeepFool direction of {label} (L2)",
                                 ylabel="β along a random orthogonal direction (L2)")
        state.figure(f"input_loss_surface_{label}", path,
                     f"Cross-entropy of {label} averaged over n = {n} test points on the plane "
                     f"x + αu + βv (u: {label}'s own DeepFool direction, v: a random direction "
                     "orthogonal to it), log colour scale; the plane leaves the [0, 1] box (see "
                     "the cross-sections).")
    state.summary.curves["input_loss"] = curves
    path = plot_loss_curves(lines, names, state.png("input_loss_lines"), log_scale=True, colours=colours,
                            styles=["-", "--"] * len(state.models),
                            title="Input-space loss: adversarial vs random direction",
                            xlabel="distance from the test point (L2)",
                            ylabel="cross-entropy")
    state.figure("input_loss_lines", path,
                 f"Cross-entropy along each model's own DeepFool direction (solid) and along a random "
                 f"direction (dashed) through each test point: median over n = {n} points with the "
                 "10-90 % band, one colour per run; the loss rises steeply only along the adversarial one.")


def weight_landscape(state: AnalysisState) -> None:
    """Filter-normalised 1-D and 2-D weight-space landscapes on the landscape batch."""
    x_batch, y_batch = state.batch
    line_axis, grid = torch.linspace(-1.0, 1.0, 21), torch.linspace(-1.0, 1.0, 13)
    half = [int((line_axis - value).abs().argmin()) for value in (-0.5, 0.5)]
    origin = int(line_axis.abs().argmin())
    curves: dict[str, Any] = {}
    lines = []
    colours = [state.colour(label) for label in state.models]
    for label, model in state.models.items():
        first = filter_normalized_direction(model, generator=state.generator)
        second = filter_normalized_direction(model, generator=state.generator)
        line = weight_landscape_1d(model, x_batch, y_batch, line_axis, direction=first)
        surface = weight_landscape_2d(model, x_batch, y_batch, grid, grid, directions=(first, second))
        curves[label] = {"offsets": line_axis, "loss_1d": line["loss"], "accuracy_1d": line["accuracy"],
                         "grid": grid, "loss_2d": surface["loss"], "accuracy_2d": surface["accuracy"]}
        state.aggregate(label, weight_loss_at_origin=float(line["loss"][origin]),
                        weight_loss_at_half=float(line["loss"][half].mean()))
        lines.append(line)
        path = plot_loss_surface(surface, state.png(f"weight_landscape_2d_{label}"),
                                 title=f"{label}: loss around the weights (filter-normalised)",
                                 xlabel="α along direction 1", ylabel="β along direction 2")
        state.figure(f"weight_landscape_2d_{label}", path,
                     f"Mean cross-entropy of {label} on n = {len(x_batch)} test points at "
                     "θ + αd₁ + βd₂ for two random filter-normalised directions (Li et al. 2018), log "
                     "colour scale.")
    state.summary.curves["weight_landscape"] = curves
    path = plot_loss_curves(lines, list(state.models), state.png("weight_landscape_1d"), colours=colours,
                            log_scale=True, title="Loss along a filter-normalised weight direction")
    state.figure("weight_landscape_1d", path,
                 f"Mean loss on n = {len(x_batch)} test points at θ + αd along one random "
                 "filter-normalised direction d per model (Li et al. 2018); flatter is wider.")


STEPS = (("minimal perturbations", minimal_perturbations), ("cross-sections", cross_sections),
         ("input-space loss", input_landscape), ("weight-space loss", weight_landscape),
         ("Hessian spectrum", hessian), ("eigenvector plane", eigenvector_plane),
         ("curvature bounds", curvature_bounds_step),
         ("random noise", noise_ratios))
