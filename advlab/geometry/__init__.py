"""Geometry of classifiers: input Hessians, curvature bounds, boundaries, landscapes, random ReLU nets.

    from advlab import geometry
    values, vectors = geometry.hessian_eigs(model, x, y, k=20)          # top-20 input-Hessian eigenpairs
    bounds = geometry.curvature_bounds(model, x, y)                     # CURE bounds on ||r*||
    section = geometry.cross_section(model, x[0], r[0], extent=2.0)     # decision boundary in a plane
    curve = geometry.weight_landscape_1d(model, x, y, alphas)           # filter-normalised landscape
    rows = geometry.random_relu_experiment([100, 1000], [(500,)])       # one-step flips

Every function takes a model and tensors and returns tensors, floats or dicts of them (make them
JSON-ready with :func:`advlab._utils.json_safe`); the ``plot_*`` functions write PNG files.
Models are run in eval mode with frozen parameters and restored afterwards; randomness comes only
from ``generator=`` arguments.
"""

from __future__ import annotations

from advlab.geometry.analysis import GeometrySummary, analyse, store_summary  # noqa: E402
from advlab.geometry.boundary import (
    adversarial_direction,
    boundary_curvature,
    boundary_profile,
    cross_section,
    decision_regions_2d,
    plot_cross_sections,
)
from advlab.geometry.curvature import THRESHOLDS, curvature_bounds, quadratic_bounds, smallest_step
from advlab.geometry.hessian import (
    HessianOperator,
    cure_curvature,
    dense_hessian,
    hessian_operator,
    hutchinson_frobenius,
    hvp,
    input_gradient,
)
from advlab.geometry.lanczos import (
    hessian_eigs,
    hessian_spectrum,
    lanczos,
    power_iteration_deflation,
)
from advlab.geometry.landscape import (
    filter_normalized_direction,
    loss_line,
    loss_surface,
    plot_loss_curves,
    plot_loss_surface,
    weight_landscape_1d,
    weight_landscape_2d,
)
from advlab.geometry.random_relu import (
    one_step_attack,
    plot_random_relu,
    random_relu_experiment,
    random_relu_network,
    sphere_points,
    summarise_claims,
)
from advlab.geometry.spirals import spirals_experiment, train_mlp
from advlab.geometry.theory import random_relu_sweep, spirals_compare  # noqa: E402

__all__ = [
    "GeometrySummary",
    "analyse",
    "random_relu_sweep",
    "spirals_compare",
    "store_summary",
    "THRESHOLDS",
    "HessianOperator",
    "adversarial_direction",
    "boundary_curvature",
    "boundary_profile",
    "cross_section",
    "cure_curvature",
    "curvature_bounds",
    "decision_regions_2d",
    "dense_hessian",
    "filter_normalized_direction",
    "hessian_eigs",
    "hessian_operator",
    "hessian_spectrum",
    "hutchinson_frobenius",
    "hvp",
    "input_gradient",
    "lanczos",
    "loss_line",
    "loss_surface",
    "one_step_attack",
    "plot_cross_sections",
    "plot_loss_curves",
    "plot_loss_surface",
    "plot_random_relu",
    "power_iteration_deflation",
    "quadratic_bounds",
    "random_relu_experiment",
    "random_relu_network",
    "smallest_step",
    "sphere_points",
    "spirals_experiment",
    "summarise_claims",
    "train_mlp",
    "weight_landscape_1d",
    "weight_landscape_2d",
]
