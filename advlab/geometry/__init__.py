"""Geometry of classifiers: input Hessians, curvature bounds, boundaries, landscapes, random ReLU nets.

    from advlab import geometry
    cmp = geometry.compare(standard, robust, x, y, generator=g)        # paired ratios with 95 % intervals
    values, vectors = geometry.hessian_eigs(model, x, y, k=20)          # top-20 input-Hessian eigenpairs
    bounds = geometry.curvature_bounds(model, x, y)                     # CURE bounds on ||r*||
    section = geometry.cross_section(model, x[0], r[0], extent=2.0)     # decision boundary in a plane
    curve = geometry.weight_landscape_1d(model, x, y, offsets)          # filter-normalised landscape
    step = geometry.one_step_attack(net, geometry.sphere_points(100, 1000))  # random ReLU nets

Every function takes a model and tensors and returns tensors, floats or dicts of them (make them
JSON-ready with :func:`advlab._utils.json_safe`); the ``plot_*`` functions write PNG files.
Models are run in eval mode with frozen parameters and restored afterwards; randomness comes only
from keyword-only ``generator=`` arguments. The lecture experiments built on these measurements
(spirals, the random-ReLU sweep) live in :mod:`advlab.experiments`; their old names here
(``random_relu_sweep``, ``spirals_compare``, ``random_relu_experiment``, ...) still work for one
release and are imported on first use (geometry never imports experiments itself).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from advlab.geometry.analysis import GeometrySummary, analyse, store_summary
from advlab.geometry.boundary import (
    adversarial_direction,
    boundary_curvature,
    boundary_profile,
    cross_section,
    decision_regions_2d,
    plot_cross_sections,
)
from advlab.geometry.compare import QUANTITIES, Comparison, compare
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
from advlab.geometry.random_relu import one_step_attack, random_relu_network, sphere_points
from advlab.geometry.scale import (
    ScaleHessianOperator,
    confidence_normalised,
    eigenvalue_profile,
    scale_hessian_eigs,
)
from advlab.geometry.stats import bootstrap_median, median, paired_ratio, verdict

#: Old names of the experiments, moved to :mod:`advlab.experiments` (one release): name -> module.
_MOVED = {
    "random_relu_sweep": "advlab.experiments.random_relu",
    "random_relu_experiment": "advlab.experiments.random_relu",
    "plot_random_relu": "advlab.experiments.random_relu",
    "summarise_claims": "advlab.experiments.random_relu",
    "spirals_compare": "advlab.experiments.spirals",
    "train_mlp": "advlab.experiments.spirals",
}

__all__ = [
    "Comparison",
    "QUANTITIES",
    "ScaleHessianOperator",
    "bootstrap_median",
    "compare",
    "confidence_normalised",
    "eigenvalue_profile",
    "median",
    "paired_ratio",
    "scale_hessian_eigs",
    "verdict",
    "GeometrySummary",
    "analyse",
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
    "power_iteration_deflation",
    "quadratic_bounds",
    "random_relu_network",
    "smallest_step",
    "sphere_points",
    "weight_landscape_1d",
    "weight_landscape_2d",
]


def __getattr__(name: str) -> Any:
    if name in _MOVED:  # deprecated: the experiments live in advlab.experiments
        warnings.warn(f"advlab.geometry.{name} moved to {_MOVED[name]}.{name}; the old name goes "
                      "in the next release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'advlab.geometry' has no attribute {name!r}")
