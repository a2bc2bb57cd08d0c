"""The steps of :func:`advlab.geometry.analysis.analyse`; each fills the shared ``AnalysisState``.

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
from advlab.geometry._common import flat, orthonormal_pair, random_normal
from advlab.geometry.analysis import AnalysisState, finite_median
from advlab.geometry.analysis_plots import (
    decision_region_figures,
    plot_bounds_vs_measured,
    plot_eigenvalue_profiles,
    plot_noise_ratios,
    plot_section_figure,
)
from advlab.geometry.boundary import boundary_curvature, boundary_profile, cross_section
from advlab.geometry.curvature import curvature_bounds
from advlab.geometry.hessian import cure_curvature, hutchinson_frobenius, input_gradient
from advlab.geometry.lanczos import hessian_eigs, hessian_spectrum
from advlab.geometry.landscape import (
    filter_normalized_direction,
    loss_line,
    loss_surface,
    plot_loss_curves,
    plot_loss_surface,
    weight_landscape_1d,
    weight_landscape_2d,
)
from advlab.threat import per_sample_view

#: Largest input dimension for which dense Hessian spectra are computed.
MAX_SPECTRUM_DIM = 1024
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
    random = random_normal(tuple(x.shape), state.generator, x.device, x.dtype)
    if bool((flat(direction).norm(dim=1) == 0).any()):  # a flat loss: any direction will do
        other = random_normal(tuple(x.shape), state.generator, x.device, x.dtype)
        direction = torch.where(per_sample_view(flat(direction).norm(dim=1) > 0, x), direction, other)
    state.u, state.v = orthonormal_pair(direction, random)
    norms = torch.stack([n.to(x.device) for n in state.norms.values()])  # (M, N)
    usable = torch.isfinite(norms) & (norms > 0)
    largest = torch.where(usable, norms, torch.zeros_like(norms)).amax(dim=0)  # (N,)
    fallback = finite_median(norms[usable])
    fallback = fallback if math.isfinite(fallback) else 1.0
    state.extents = state.params["extent_factor"] * torch.where(largest > 0, largest, fallback)


def section_curvature(section: dict[str, Any]) -> tuple[float, float]:
    """``(curvature, crossing)``: the boundary's distance along ``u`` nearest the ``u`` axis and
    its curvature fitted over ``|beta| <=`` that distance (at least 3 grid steps); ``nan`` if the
    boundary does not cross the positive ``u`` side of the section."""
    betas, crossings = boundary_profile(section, window=section["extent"])
    if len(betas) == 0:
        return math.nan, math.nan
    crossing = float(crossings[int(betas.abs().argmin())])
    step = float(section["alphas"][1] - section["alphas"][0])
    return boundary_curvature(section, window=max(crossing, 3 * step)), crossing


def cross_sections(state: AnalysisState) -> None:
    """One section per point and model in the shared plane; curvature and crossing per point."""
    assert state.u is not None and state.v is not None and state.extents is not None
    measured: dict[str, list[tuple[float, float]]] = {label: [] for label in state.models}
    for i in range(len(state.x)):
        sections = [cross_section(model, state.x[i], state.u[i], state.v[i],
                                  extent=float(state.extents[i]), resolution=state.params["resolution"])
                    for model in state.models.values()]
        for label, section in zip(state.models, sections):
            measured[label].append(section_curvature(section))
        if i < FIGURE_POINTS and state.dim > 2:
            plot_section_figure(state, i, sections, [measured[label][i][0] for label in state.models])
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
        decision_region_figures(state)


def input_landscape(state: AnalysisState) -> None:
    """Per-sample loss along ``u`` and ``v`` (1-D) and mean loss over their plane (2-D)."""
    assert state.u is not None and state.v is not None and state.extents is not None
    scale = finite_median(state.extents)
    alphas, grid = torch.linspace(-scale, scale, 41), torch.linspace(-scale, scale, 21)
    curves: dict[str, Any] = {"alphas": alphas, "grid": grid, "models": {}}
    lines, names = [], []
    for label, model in state.models.items():
        along_u = loss_line(model, state.x, state.y, state.u, alphas)
        along_v = loss_line(model, state.x, state.y, state.v, alphas)
        surface = loss_surface(model, state.x, state.y, state.u, state.v, grid, grid)
        state.record(label, loss_along_adversarial=along_u["loss"].T, loss_along_random=along_v["loss"].T)
        curves["models"][label] = {"adversarial": along_u["loss"].double().mean(dim=1),
                                   "random": along_v["loss"].double().mean(dim=1),
                                   "surface": surface["loss"].double().mean(dim=2)}
        lines += [along_u, along_v]
        names += [f"{label}: DeepFool direction", f"{label}: random direction"]
        path = plot_loss_surface(surface, state.png(f"input_loss_surface_{label}"),
                                 title=f"{label}: input-space loss around the test points",
                                 xlabel=f"α along the DeepFool direction of {state.first} (L2)",
                                 ylabel="β along a random orthogonal direction (L2)")
        state.figure(f"input_loss_surface_{label}", path,
                     f"Cross-entropy of {label} averaged over {len(state.x)} test points on the "
                     "plane x + αu + βv (u: DeepFool direction, v: random orthogonal direction).")
    state.summary.curves["input_loss"] = curves
    path = plot_loss_curves(lines, names, state.png("input_loss_lines"), log_scale=True,
                            title="Input-space loss: adversarial vs random direction",
                            xlabel="distance from the test point (L2)",
                            ylabel="cross-entropy (mean over points)")
    state.figure("input_loss_lines", path,
                 "Mean cross-entropy along the DeepFool direction and along a random direction "
                 "through each test point: the loss rises steeply only along the adversarial one.")


def weight_landscape(state: AnalysisState) -> None:
    """Filter-normalised 1-D and 2-D weight-space landscapes on the landscape batch."""
    x_batch, y_batch = state.batch
    line_axis, grid = torch.linspace(-1.0, 1.0, 21), torch.linspace(-1.0, 1.0, 13)
    half = [int((line_axis - value).abs().argmin()) for value in (-0.5, 0.5)]
    origin = int(line_axis.abs().argmin())
    curves: dict[str, Any] = {}
    lines = []
    for label, model in state.models.items():
        first = filter_normalized_direction(model, state.generator)
        second = filter_normalized_direction(model, state.generator)
        line = weight_landscape_1d(model, x_batch, y_batch, line_axis, direction=first)
        surface = weight_landscape_2d(model, x_batch, y_batch, grid, grid, directions=(first, second))
        curves[label] = {"alphas": line_axis, "loss_1d": line["loss"], "accuracy_1d": line["accuracy"],
                         "grid": grid, "loss_2d": surface["loss"], "accuracy_2d": surface["accuracy"]}
        state.aggregate(label, weight_loss_at_origin=float(line["loss"][origin]),
                        weight_loss_at_half=float(line["loss"][half].mean()))
        lines.append(line)
        path = plot_loss_surface(surface, state.png(f"weight_landscape_2d_{label}"),
                                 title=f"{label}: loss around the weights (filter-normalised)",
                                 xlabel="α along direction 1", ylabel="β along direction 2")
        state.figure(f"weight_landscape_2d_{label}", path,
                     f"Mean cross-entropy of {label} on {len(x_batch)} test points at "
                     "θ + αd₁ + βd₂ for two random filter-normalised directions (Li et al. 2018).")
    state.summary.curves["weight_landscape"] = curves
    path = plot_loss_curves(lines, list(state.models), state.png("weight_landscape_1d"),
                            log_scale=True, title="Loss along a filter-normalised weight direction")
    state.figure("weight_landscape_1d", path,
                 f"Mean loss on {len(x_batch)} test points at θ + αd along one random "
                 "filter-normalised direction d per model (Li et al. 2018); flatter is wider.")


def hessian(state: AnalysisState) -> None:
    """Lanczos top-k, Hutchinson ||H||_F^2, CURE's estimate; dense spectra for small inputs."""
    x, y, dim = state.x, state.y, state.dim
    count = min(len(x), state.params["spectrum_points"] or (len(x) if dim <= 256 else 3))
    profiles, spectra = {}, {}
    for label, model in state.models.items():
        values, _ = hessian_eigs(model, x, y, k=state.params["eigs"], generator=state.generator)  # (N, k)
        frobenius = hutchinson_frobenius(model, x, y, samples=state.params["hutchinson_samples"],
                                         generator=state.generator)
        cure = cure_curvature(model, x, y)
        state.record(label, top_eigenvalues=values, top_eigenvalue=values[:, 0],
                     hutchinson_frobenius=frobenius, cure_curvature=cure)
        state.aggregate(label, median_top_eigenvalue=finite_median(values[:, 0]),
                        median_hutchinson_frobenius=finite_median(frobenius),
                        median_cure_curvature=finite_median(cure))
        profiles[label] = values
        if dim <= MAX_SPECTRUM_DIM:
            spectrum = hessian_spectrum(model, x[:count], y[:count], max_dim=MAX_SPECTRUM_DIM)  # (P, D)
            spectra[label] = {"points": count, "eigenvalues": spectrum,
                              "frobenius_exact": spectrum.double().pow(2).sum(dim=1)}
            profiles[label] = spectrum
    if spectra:
        state.summary.curves["hessian_spectrum"] = spectra
    else:
        state.skip("hessian_spectrum", f"input dimension {dim} > {MAX_SPECTRUM_DIM}: dense Hessians "
                                       f"are too expensive; top-{state.params['eigs']} Lanczos only")
    kind = "every eigenvalue" if spectra else f"top {state.params['eigs']} eigenvalues (Lanczos)"
    path = plot_eigenvalue_profiles(profiles, state.png("hessian_eigenvalues"),
                                    title="Input-Hessian eigenvalue profile of the cross-entropy")
    state.figure("hessian_eigenvalues", path,
                 f"|λ| of the input Hessian of the loss against rank ({kind}; thin lines: single "
                 "test points, thick: median; values below 1e-8 of the largest, round-off around "
                 "the exact zeros of ReLU networks, are drawn at that floor). Lower curves mean a "
                 "flatter, less curved loss (Moosavi-Dezfooli et al. 2019).")


def curvature_bounds_step(state: AnalysisState) -> None:
    """CURE's bounds on ``||r*||`` per point against the measured DeepFool norm."""
    lower, upper = {}, {}
    for label, model in state.models.items():
        bounds = curvature_bounds(model, state.x, state.y, generator=state.generator)
        measured = state.norms[label].to(bounds["lower"])
        valid = torch.isfinite(measured) & (measured > 0)
        state.record(label, bound_lower=bounds["lower"], bound_upper=bounds["upper"],
                     bound_first_order=bounds["first_order"])
        count = max(int(valid.sum()), 1)
        state.aggregate(label,
                        fraction_lower_below_measured=float((bounds["lower"] <= measured)[valid].sum()) / count,
                        fraction_measured_below_upper=float((measured <= bounds["upper"])[valid].sum()) / count)
        lower[label], upper[label] = bounds["lower"], bounds["upper"]
    path = plot_bounds_vs_measured(state.norms, lower, upper, state.png("curvature_bounds"))
    state.figure("curvature_bounds", path,
                 "CURE's lower (▼) and upper (▲) bounds on the minimal perturbation from the local "
                 "quadratic model of the margin loss, against the DeepFool norm of each point; "
                 "a valid lower bound lies below y = x. For piecewise-linear (ReLU) networks the "
                 "margin's Hessian vanishes almost everywhere and both bounds reduce to the "
                 "first-order estimate.")


def _subspace_dims(state: AnalysisState) -> list[int]:
    dim, wanted = state.dim, state.params["subspace_dims"]
    candidates = wanted if wanted is not None else [dim // 16, dim // 4]
    usable = sorted({int(m) for m in candidates if 1 < int(m) < dim})
    for m in sorted({int(m) for m in wanted or []} - set(usable)):  # asked for, but unusable
        state.skip(f"subspace_m{m}", f"subspace dimension {m} is not in 2..{dim - 1}")
    if not usable:
        state.skip("subspace_ratios", f"input dimension {dim} leaves no subspace dimension 1 < m < d")
    return usable


def noise_ratios(state: AnalysisState) -> None:
    """Random-line and random-subspace flip distances over the DeepFool norm, vs sqrt(d/m)."""
    from advlab.evaluation.minimal import noise_robustness

    dims, draws = _subspace_dims(state), max(1, state.params["directions"] // 3)
    ratios, medians = {}, {}
    for label, model in state.models.items():
        adversarial = state.norms[label]
        line = noise_robustness(model, state.x, state.y, adversarial,
                                directions=state.params["directions"], generator=state.generator)
        state.record(label, noise_norm=line.random_norms, noise_ratio=line.ratio)
        medians[label] = {1: line.median_ratio}
        subspace = {}
        for m in dims:
            result = noise_robustness(model, state.x, state.y, adversarial, directions=draws,
                                      subspace_dim=m, generator=state.generator)
            state.record(label, **{f"subspace_ratio_m{m}": result.ratio})
            medians[label][m] = result.median_ratio
            subspace[str(m)] = {"median_ratio": result.median_ratio, "predicted": result.predicted_ratio}
        state.aggregate(label, median_noise_ratio=line.median_ratio, sqrt_d=math.sqrt(state.dim),
                        noise_ratio_over_sqrt_d=line.median_ratio / math.sqrt(state.dim), subspace=subspace)
        ratios[label] = line.ratio
    path = plot_noise_ratios(ratios, state.dim, medians, state.png("noise_ratio"))
    state.figure("noise_ratio", path,
                 "Left: per test point, the distance to the boundary along a random direction (median "
                 f"over {state.params['directions']} directions) divided by the DeepFool distance, with "
                 "the prediction √d of Fawzi et al. (2016). Right: the same ratio inside random "
                 "m-dimensional subspaces (median over points) against √(d/m).")


STEPS = (("minimal perturbations", minimal_perturbations), ("cross-sections", cross_sections),
         ("input-space loss", input_landscape), ("weight-space loss", weight_landscape),
         ("Hessian spectrum", hessian), ("curvature bounds", curvature_bounds_step),
         ("random noise", noise_ratios))
