"""The state an analysis shares between its steps, and the summary it fills.

:class:`GeometrySummary` is what :func:`advlab.geometry.analysis.analyse` returns (JSON-ready);
:class:`AnalysisState` is what its steps (:mod:`advlab.geometry.analysis_steps`,
:mod:`advlab.geometry.analysis_curvature`) read and fill. Shapes: ``x`` ``(N, ...)`` analysed
points, per-sample values ``(N,)`` or ``(N, k)``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import json_safe

logger = logging.getLogger(__name__)

#: ``progress(step_name, steps_done, steps_total)``, called after each step.
Progress = Callable[[str, int, int], None]


@dataclass
class GeometrySummary:
    """Everything :func:`~advlab.geometry.analysis.analyse` measured, JSON-ready through :meth:`to_dict`.

    ``per_sample[label][quantity]`` holds one value (or one row) per analysed point, in the
    order of ``indices`` (positions in the ``x`` passed to :func:`analyse`) and ``labels``;
    ``aggregates[label]`` the per-model statistics; ``curves`` the landscapes and spectra;
    ``figures[name]`` a PNG path relative to the output folder and ``captions[name]`` its caption;
    ``skipped[name]`` why an analysis did not apply; ``timings`` seconds per step; ``comparison``
    the paired rows (second model / first) of :func:`advlab.geometry.analysis.compare_models` or
    of :func:`advlab.geometry.compare`.
    """

    models: list[str]
    input_shape: list[int]
    input_dim: int
    indices: list[int]
    labels: list[int]
    params: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    per_sample: dict[str, dict[str, Any]] = field(default_factory=dict)
    aggregates: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tensors become lists, NaN/inf become ``None``)."""
        return json_safe({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class AnalysisState:
    """What the steps share: the inputs, the summary being filled, and the common plane."""

    models: dict[str, nn.Module]
    x: Tensor  # (N, ...) the analysed points
    y: Tensor  # (N,)
    batch: tuple[Tensor, Tensor]  # weight-landscape batch (B, ...), (B,)
    out_dir: Path
    summary: GeometrySummary
    generator: torch.Generator | None = None
    train_xy: tuple[Tensor, Tensor] | None = None
    norms: dict[str, Tensor] = field(default_factory=dict)  # DeepFool norms per model, (N,)
    perturbations: dict[str, Tensor] = field(default_factory=dict)  # DeepFool r per model, (N, ...)
    u: Tensor | None = None  # (N, ...) unit adversarial direction of the first model
    v: Tensor | None = None  # (N, ...) unit random direction orthogonal to u
    extents: Tensor | None = None  # (N,) half-width of each point's cross-section
    pool: tuple[Tensor, Tensor] | None = None  # (P, ...), (P,) points of the eigenvector plane
    colours: dict[str, str] = field(default_factory=dict)  # model label -> the run's colour

    @property
    def params(self) -> dict[str, Any]:
        return self.summary.params

    @property
    def dim(self) -> int:
        return self.summary.input_dim

    @property
    def first(self) -> str:
        return self.summary.models[0]

    def record(self, label: str, **values: Any) -> None:
        """Store per-sample values of model ``label`` (tensors are moved to the CPU)."""
        target = self.summary.per_sample.setdefault(label, {})
        target.update({k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in values.items()})

    def aggregate(self, label: str, **values: Any) -> None:
        self.summary.aggregates.setdefault(label, {}).update(values)

    def colour(self, label: str) -> str:
        """The colour of model ``label`` in every figure (the report's colour of that run)."""
        if label not in self.colours:
            from advlab.report.plotting import colours_for

            self.colours = {**colours_for(self.models), **self.colours}
        return self.colours[label]

    @property
    def palette(self) -> dict[str, str]:
        """``{label: colour}`` of every model (see :meth:`colour`)."""
        return {label: self.colour(label) for label in self.models}

    def png(self, name: str) -> Path:
        """``out_dir / <name>.png`` with anything but letters, digits, ``-``, ``_``, ``.`` replaced."""
        return self.out_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")

    def figure(self, name: str, path: Path, caption: str) -> None:
        self.summary.figures[name] = str(path.relative_to(self.out_dir))
        self.summary.captions[name] = caption

    def skip(self, name: str, reason: str) -> None:
        self.summary.skipped[name] = reason
        logger.info("geometry: skipped %s: %s", name, reason)


def finite_median(values: Tensor) -> float:
    """True median of the finite entries of ``values`` (``nan`` if none; mean of the two middle ones)."""
    values = values.double().flatten()
    values = values[torch.isfinite(values)]
    return float(torch.quantile(values.cpu(), 0.5)) if values.numel() else math.nan
