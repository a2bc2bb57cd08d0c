"""The geometry of one classifier, or of a pair (standard vs adversarially trained), per test point.

:func:`analyse` measures on the same test points, for every model:

* DeepFool's minimal L2 perturbation and ``rho_adv`` (Moosavi-Dezfooli, Fawzi & Frossard 2016);
* decision-boundary cross-sections in the plane of the *first* model's adversarial direction and
  a random direction shared by all models, and the boundary curvature there (Fawzi,
  Moosavi-Dezfooli, Frossard & Soatto 2018);
* the input-space loss along and around those two directions, and filter-normalised weight-space
  landscapes on a small batch (Li, Xu, Taylor, Studer & Goldstein 2018);
* the input-Hessian spectrum (Lanczos top-``k``; every eigenvalue for ``d <= 1024``),
  Hutchinson's ``||H||_F^2``, CURE's finite-difference curvature and CURE's bounds on the
  minimal perturbation (Moosavi-Dezfooli, Fawzi, Uesato & Frossard 2019);
* the random-noise to adversarial ratio against ``sqrt(d)``, and in random ``m``-dimensional
  subspaces against ``sqrt(d / m)`` (Fawzi, Moosavi-Dezfooli & Frossard 2016).

Figures (PNG) and ``summary.json`` go to ``out_dir``; :class:`GeometrySummary` lists every figure
with a caption, and every analysis that did not apply with the reason. The steps themselves live
in :mod:`advlab.geometry.analysis_steps` and :mod:`advlab.geometry.analysis_curvature`, the state
they share in :mod:`advlab.geometry.analysis_state`, the figures in
:mod:`advlab.geometry.analysis_plots` (functions of data only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import atomic_write_json
from advlab.attacks._core import model_guard, predict
from advlab.geometry.analysis_state import (  # noqa: F401  (AnalysisState, finite_median: old home)
    AnalysisState,
    GeometrySummary,
    Progress,
    finite_median,
)
from advlab.geometry.analysis_steps import STEPS
from advlab.geometry.stats import paired_ratio

logger = logging.getLogger(__name__)


def select_points(models: dict[str, nn.Module], x: Tensor, y: Tensor, points: int) -> Tensor:
    """Indices ``(points,)`` into ``x``: first the points every model classifies correctly, in
    order, then (if too few) the others; the geometry of a correct point is the one of interest."""
    correct = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for model in models.values():
        with model_guard(model):
            correct &= predict(model, x).argmax(dim=1) == y
    order = torch.cat([correct.nonzero().flatten(), (~correct).nonzero().flatten()])
    return order[:points].cpu()


def _check(models: dict[str, nn.Module], x: Tensor, y: Tensor, points: int, eigs: int,
           directions: int) -> None:
    if not isinstance(models, dict) or not 1 <= len(models) <= 2:
        raise ValueError("models must be a dict of one or two labelled models, e.g. "
                         "{'standard': model, 'adversarial': robust_model}")
    if not all(isinstance(m, nn.Module) for m in models.values()):
        raise TypeError("every value of models must be a torch.nn.Module")
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise ValueError(f"x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    for name, value in (("points", points), ("eigs", eigs), ("directions", directions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if points > len(x):
        raise ValueError(f"points={points} but only {len(x)} inputs were given")


def analyse(models: dict[str, nn.Module], x: Tensor, y: Tensor, out_dir: str | Path, *,
            points: int = 8, eigs: int = 20, directions: int = 10,
            subspace_dims: Sequence[int] | None = None, spectrum_points: int | None = None,
            landscape_batch: int = 128, resolution: int = 41, extent_factor: float = 2.5,
            hutchinson_samples: int = 64, generator: torch.Generator | None = None,
            progress: Progress | None = None, train_xy: tuple[Tensor, Tensor] | None = None,
            metadata: dict[str, Any] | None = None, h: float = 0.5,
            bound_loss: str = "ce", plane_points: int = 40,
            colours: dict[str, str] | None = None) -> GeometrySummary:
    """Run every geometry analysis that applies on ``points`` test points of ``x``.

    Args:
        models: one or two labelled classifiers on the same inputs (e.g. ``{"standard": m1,
            "adversarial": m2}``); the first one's adversarial directions define the planes.
        x: candidate test points ``(N, ...)`` in [0, 1]; y: labels ``(N,)``. The analysed points
            are the first ``points`` that every model classifies correctly
            (:func:`select_points`); the weight landscapes use the first ``landscape_batch``.
        out_dir: folder for the PNG figures and ``summary.json``.
        eigs: Hessian eigenvalues by Lanczos per point (at most ``d``).
        directions: random directions (lines) per point for the noise ratio; random subspaces
            use ``max(10, directions)`` draws (each a DeepFool run inside the subspace).
        subspace_dims: subspace dimensions ``m`` (default ``d // 16`` and ``d // 4``).
        spectrum_points: points whose full Hessian spectrum is computed when ``d <= 1024``
            (default all for ``d <= 256``, else 3: each costs ``d`` HVPs).
        resolution: grid points per axis of a cross-section; extent_factor: half-width of a
            cross-section in multiples of the point's largest DeepFool norm over the models.
        hutchinson_samples: Rademacher probes per point for ``||H||_F^2``.
        generator: every random draw (directions, probes, Lanczos starts).
        progress: called after each step with ``(name, done, total)``.
        train_xy: training points ``(M, 2)`` and labels for the decision regions of 2-D data.
        metadata: stored as is in the summary (dataset, run names, seed, ...).
        h: scale of the finite-difference curvature (:mod:`advlab.geometry.scale`).
        bound_loss: loss of CURE's bounds: ``"ce"`` (flip at ``log 2``) or ``"cw"`` (margin, 0).
        plane_points: points of the (DeepFool direction, top eigenvector at scale ``h``) plane and
            its paired curvature rows (:mod:`advlab.geometry.analysis_plane`; at most ``len(x)``),
            chosen like the analysed points; at least 40 for a useful interval.
        colours: model label -> colour of every figure (default
            :func:`advlab.report.plotting.colours_for` of the labels; the CLI passes the colours the
            report gives those runs).

    Returns:
        the :class:`GeometrySummary`, also written to ``out_dir / "summary.json"``.
    """
    _check(models, x, y, points, eigs, directions)
    if isinstance(plane_points, bool) or not isinstance(plane_points, int) or plane_points < 0:
        raise ValueError(f"plane_points must be a non-negative int (0 skips the plane), got {plane_points!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plane_points = min(plane_points, len(x))
    chosen = select_points(models, x, y, max(points, plane_points))
    index, plane_index = chosen[:points], chosen[:plane_points]
    params = {"points": points, "eigs": min(eigs, x[0].numel()), "directions": directions,
              "subspace_dims": None if subspace_dims is None else list(subspace_dims),
              "spectrum_points": spectrum_points, "landscape_batch": min(landscape_batch, len(x)),
              "resolution": resolution, "extent_factor": extent_factor,
              "hutchinson_samples": hutchinson_samples, "h": float(h), "bound_loss": bound_loss,
              "plane_points": plane_points}
    summary = GeometrySummary(models=list(models), input_shape=list(x.shape[1:]),
                              input_dim=x[0].numel(), indices=index.tolist(),
                              labels=y[index.to(y.device)].tolist(), params=params,
                              metadata={"out_dir": str(out_dir.resolve()), **(metadata or {})})
    state = AnalysisState(models, x[index.to(x.device)], y[index.to(y.device)],
                          (x[:landscape_batch], y[:landscape_batch]), out_dir, summary,
                          generator, train_xy,
                          pool=(x[plane_index.to(x.device)], y[plane_index.to(y.device)]) if plane_points else None)
    state.colours = dict(colours) if colours else {}
    summary.params["colours"] = state.palette
    for done, (name, step) in enumerate(STEPS, start=1):
        started = time.perf_counter()
        step(state)
        summary.timings[name] = time.perf_counter() - started
        logger.info("geometry: %s done in %.1f s", name, summary.timings[name])
        if progress is not None:
            progress(name, done, len(STEPS))
    summary.comparison = {**compare_models(summary, generator=generator), **plane_rows(summary)}
    atomic_write_json(out_dir / "summary.json", summary.to_dict())
    return summary


def plane_rows(summary: GeometrySummary) -> dict[str, dict[str, Any]]:
    """The paired rows of the eigenvector-plane step (:mod:`advlab.geometry.analysis_plane`), to be
    kept in ``summary.comparison`` next to any other comparison; ``{}`` when it did not run."""
    return dict(summary.curves.get("eigenvector_plane", {}).get("comparison") or {})


def store_summary(store: Any, run_name: str | None, summary: GeometrySummary) -> int:
    """Record ``summary`` in a :class:`advlab.store.Store` as a ``"geometry"`` evaluation; its id."""
    params = {**summary.params, "models": summary.models, **summary.metadata}
    return store.add_evaluation(run_name, "geometry", params, summary.to_dict())


#: (comparison row, per-sample key) compared between two models by :func:`compare_models`.
COMPARED = (("minimal_l2", "deepfool_norm"), ("boundary_curvature", "normalised_curvature"),
            ("top_eigenvalue_pointwise", "top_eigenvalue"),
            ("hessian_frobenius", "hutchinson_frobenius"), ("cure_curvature", "cure_curvature"),
            ("noise_ratio", "noise_ratio"))


def compare_models(summary: GeometrySummary, *,
                   generator: torch.Generator | None = None) -> dict[str, dict[str, Any]]:
    """Paired rows ``{name: {"ratio", "ci", "n", "verdict", ...}}`` (second model / first) over
    the analysed points both models classify correctly (:func:`advlab.geometry.stats.paired_ratio`).

    With the few points of the figures the intervals are wide; :func:`advlab.geometry.compare`
    on 100 or more points is the comparison to quote (``advlab geometry --compare`` runs it).
    """
    if len(summary.models) != 2:
        return {}
    first, second = (summary.per_sample[label] for label in summary.models)
    both = first["correct"].bool() & second["correct"].bool()
    rows = {}
    for name, key in COMPARED:
        a, b = first.get(key), second.get(key)
        if key == "normalised_curvature":
            a = (first["boundary_curvature"] * first["boundary_distance_along_u"]).abs()
            b = (second["boundary_curvature"] * second["boundary_distance_along_u"]).abs()
        if a is None or b is None:
            continue
        rows[name] = paired_ratio(torch.as_tensor(a).double(), torch.as_tensor(b).double(), mask=both,
                                  generator=generator).to_dict()
    return rows
