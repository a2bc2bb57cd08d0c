"""The curvature and noise steps of :func:`advlab.geometry.analysis.analyse`.

* :func:`hessian`: Lanczos top-``k`` of the input Hessian, Hutchinson's ``||H||_F^2``, CURE's
  finite-difference curvature, and dense spectra for small inputs;
* :func:`curvature_bounds_step`: CURE's bounds on the minimal perturbation against DeepFool's;
* :func:`noise_ratios`: random-noise against adversarial flip distances (Fawzi,
  Moosavi-Dezfooli & Frossard 2016), measured by :mod:`advlab.evaluation.noise`.

Each step fills the shared :class:`~advlab.geometry.analysis_state.AnalysisState`.
"""

from __future__ import annotations

import math

import torch

from advlab.evaluation.noise import noise_robustness
from advlab.geometry.analysis_plots import (
    plot_bounds_vs_measured,
    plot_eigenvalue_profiles,
    plot_noise_ratios,
)
from advlab.geometry.analysis_state import AnalysisState, finite_median
from advlab.geometry.compare_measures import noise_distances
from advlab.geometry.curvature import curvature_bounds
from advlab.geometry.hessian import cure_curvature, hutchinson_frobenius
from advlab.geometry.lanczos import hessian_eigs, hessian_spectrum
from advlab.geometry.profile_plots import linear_noise_reference, plot_profile_bands
from advlab.geometry.scale import confidence_normalised, scale_hessian_eigs
from advlab.geometry.stats import bootstrap_median

#: Largest input dimension for which dense Hessian spectra are computed.
MAX_SPECTRUM_DIM = 1024


def hessian(state: AnalysisState) -> None:
    """Lanczos top-k, Hutchinson ||H||_F^2, CURE's estimate; dense spectra for small inputs."""
    x, y, dim = state.x, state.y, state.dim
    count = min(len(x), state.params["spectrum_points"] or (len(x) if dim <= 256 else 3))
    profiles, spectra, bands = {}, {}, {}
    for label, model in state.models.items():
        values, _ = hessian_eigs(model, x, y, k=state.params["eigs"], generator=state.generator)  # (N, k)
        frobenius = hutchinson_frobenius(model, x, y, samples=state.params["hutchinson_samples"],
                                         generator=state.generator)
        cure = cure_curvature(model, x, y)
        scale = scale_hessian_eigs(model, x, y, k=state.params["eigs"], h=state.params["h"],
                                   generator=state.generator)  # (N, k)
        normalised = confidence_normalised(model, x, y, values[:, 0])
        state.record(label, top_eigenvalues=values, top_eigenvalue=values[:, 0],
                     top_eigenvalues_scale=scale, top_eigenvalue_scale=scale[:, 0],
                     top_eigenvalue_normalised=normalised,
                     hutchinson_frobenius=frobenius, cure_curvature=cure)
        bands[label] = {"pointwise": values, "scale": scale}
        state.aggregate(label, median_top_eigenvalue=finite_median(values[:, 0]),
                        median_top_eigenvalue_scale=finite_median(scale[:, 0]),
                        median_top_eigenvalue_normalised=finite_median(normalised),
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
    path = plot_eigenvalue_profiles(profiles, state.png("hessian_eigenvalues"), colours=state.palette,
                                    title="Input-Hessian eigenvalue profile of the cross-entropy")
    state.figure("hessian_eigenvalues", path,
                 f"|λ| of the input Hessian of the loss against rank ({kind}; thin lines: single "
                 f"test points, thick: median over n = {len(next(iter(profiles.values())))} points; values below 1e-8 of the largest, round-off around "
                 "the exact zeros of ReLU networks, are drawn at that floor). Lower curves mean a "
                 "flatter, less curved loss (Moosavi-Dezfooli et al. 2019).")


    path = plot_profile_bands(bands, state.png("eigenvalue_profile_bands"), h=state.params["h"],
                              colours=state.palette)
    state.figure("eigenvalue_profile_bands", path,
                 f"Top {state.params['eigs']} eigenvalues per point, median (line) and 10-90 % band "
                 f"over the n = {len(x)} points, of the pointwise input Hessian (left) and of the "
                 f"curvature at scale h = {state.params['h']:g} (right: symmetric finite differences of "
                 "gradients, Lanczos). For ReLU networks the pointwise Hessian has at most C - 1 "
                 "nonzero eigenvalues and follows the confidence; the scale-h profile is Fawzi et al.'s.")


def curvature_bounds_step(state: AnalysisState) -> None:
    """CURE's bounds on ``||r*||`` per point against the measured DeepFool norm.

    Per model: the fraction of points with ``lower <= r* <= upper`` (``fraction_bracketed``) and
    the fractions where the local quadratic model breaks down (``lower > r*`` or ``r* > upper``).
    With ``bound_loss="ce"`` (threshold ``log 2``) the upper bounds bound the distance to
    ``p_y = 1/2``, which is at least the flip distance only for two classes.
    """
    lower, upper = {}, {}
    loss = state.params.get("bound_loss", "ce")
    for label, model in state.models.items():
        bounds = curvature_bounds(model, state.x, state.y, loss=loss, generator=state.generator)
        measured = state.norms[label].to(bounds["lower"])
        valid = torch.isfinite(measured) & (measured > 0)
        state.record(label, bound_lower=bounds["lower"], bound_upper=bounds["upper"],
                     bound_upper_eigenvector=bounds["upper_eigenvector"],
                     bound_upper_gradient=bounds["upper_gradient"], bound_first_order=bounds["first_order"])
        count = max(int(valid.sum()), 1)
        below, above = bounds["lower"] <= measured, measured <= bounds["upper"]
        state.aggregate(label, bound_points=int(valid.sum()),
                        fraction_lower_below_measured=float(below[valid].sum()) / count,
                        fraction_measured_below_upper=float(above[valid].sum()) / count,
                        fraction_bracketed=float((below & above)[valid].sum()) / count,
                        fraction_quadratic_model_breaks=float((~(below & above))[valid].sum()) / count,
                        fraction_lower_equals_upper=float((bounds["lower"] == bounds["upper"])[valid].sum()) / count)
        lower[label], upper[label] = bounds["lower"], bounds["upper"]
    path = plot_bounds_vs_measured(state.norms, lower, upper, state.png("curvature_bounds"),
                                   colours=state.palette)
    name = "cross-entropy, flip at CE = log 2" if loss == "ce" else "margin loss, flip at 0"
    state.figure("curvature_bounds", path,
                 f"CURE's bounds ({name}) on the minimal perturbation, n = {len(state.x)} points: ▼ "
                 "lower bound from ||g|| and λ_max of the local quadratic model, ▲ upper = the smaller "
                 "of the step along the top eigenvector (the paper's bound) and the step along the "
                 "gradient, against the DeepFool norm; a valid lower bound lies below y = x. Points "
                 "where the bracket fails are where the quadratic model breaks down (see "
                 "fraction_bracketed in summary.json).")


def _subspace_dims(state: AnalysisState) -> list[int]:
    dim, wanted = state.dim, state.params["subspace_dims"]
    requested = wanted if wanted is not None else [dim // 16, dim // 4]
    usable = sorted({int(m) for m in requested if 1 < int(m) < dim})
    for m in sorted({int(m) for m in wanted or []} - set(usable)):  # asked for, but unusable
        state.skip(f"subspace_m{m}", f"subspace dimension {m} is not in 2..{dim - 1}")
    if not usable:
        state.skip("subspace_ratios", f"input dimension {dim} leaves no subspace dimension 1 < m < d")
    return usable


def noise_ratios(state: AnalysisState) -> None:
    """Random-line and random-subspace flip distances over the DeepFool norm, vs sqrt(d/m)."""
    dims, draws = _subspace_dims(state), max(10, state.params["directions"])
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
        unclipped = noise_distances(model, state.x, state.y, directions=state.params["directions"],
                                    clip=False, generator=state.generator) / adversarial.double().cpu()
        state.record(label, noise_ratio_unclipped=unclipped)
        state.aggregate(label, median_noise_ratio_unclipped=finite_median(unclipped))
        state.aggregate(label, median_noise_ratio=line.median_ratio, sqrt_d=math.sqrt(state.dim),
                        noise_ratio_over_sqrt_d=line.median_ratio / math.sqrt(state.dim), subspace=subspace)
        ratios[label] = line.ratio
    medians_ci = "; ".join(f"{label} median {_median_with_interval(values, state.generator)}"
                           for label, values in ratios.items())
    reference = linear_noise_reference(state.dim, directions=state.params["directions"],
                                       points=1000, generator=state.generator)
    state.summary.curves["noise_reference_linear"] = reference
    path = plot_noise_ratios(ratios, state.dim, medians, state.png("noise_ratio"), reference=reference,
                             colours=state.palette)
    state.figure("noise_ratio", path,
                 "Left: per test point, the distance to the boundary along a random direction (median "
                 f"over {state.params['directions']} directions) divided by the DeepFool distance, with "
                 f"the prediction √d of Fawzi et al. (2016) and (grey band) the median and 10-90 % band "
                 f"of the exact ratio of a linear classifier ({reference['median']:.3g} "
                 f"[{reference['low']:.3g}, {reference['high']:.3g}]); n = {len(state.x)} points "
                 f"({medians_ci}; 95 % bootstrap intervals), "
                 "probes clipped to [0, 1] (unclipped ratios in summary.json). Right: the same ratio inside random "
                 "m-dimensional subspaces (median over points) against √(d/m).")


def _median_with_interval(values: torch.Tensor, generator: torch.Generator | None) -> str:
    """``"m [lo, hi] (n = k)"``: the median of the finite ``values`` with its bootstrap interval."""
    finite = values.double().cpu()
    finite = finite[torch.isfinite(finite)]
    if finite.numel() < 2:
        return f"n/a (n = {finite.numel()})"
    lo, hi = bootstrap_median(finite, generator=generator)
    return f"{finite_median(finite):.3g} [{lo:.3g}, {hi:.3g}] (n = {finite.numel()})"
