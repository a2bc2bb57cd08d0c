"""Paired statistics for comparing two models point by point: true medians, bootstrap intervals.

Every comparison advlab prints is a ratio of two models' values on the *same* test points. The
statistic is the median over points of the per-point ratio ``b_i / a_i``; its 95 % interval is
the percentile bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13):
resample the points with replacement, recompute the median, take the 2.5 % and 97.5 % quantiles
of the resampled medians. Resampling whole points keeps the pairing. A difference is called one
only when the interval excludes 1 (:func:`verdict`).

Medians are true medians (the mean of the two middle values for an even count), not
``torch.median``'s lower middle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RatioInterval", "bootstrap_median", "difference_interval", "median", "paired_ratio",
           "proportion_interval", "verdict"]

#: Verdicts, from the interval alone.
LOWER, HIGHER, SAME = "lower", "higher", "no significant difference"


def median(values: Tensor) -> float:
    """True median of the finite entries of ``values`` (``nan`` when none)."""
    values = values.detach().double().flatten()
    values = values[torch.isfinite(values)]
    return float(torch.quantile(values.cpu(), 0.5)) if values.numel() else math.nan


def bootstrap_median(values: Tensor, *, resamples: int = 2000, level: float = 0.95,
                     generator: torch.Generator | None = None) -> tuple[float, float]:
    """Percentile-bootstrap interval ``(lo, hi)`` of the median of ``values`` ``(n,)``.

    ``resamples`` draws of ``n`` indices with replacement (from ``generator``); each draw's true
    median; the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those medians.
    ``(nan, nan)`` for fewer than 2 values.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 10:
        raise ValueError(f"resamples must be an int >= 10, got {resamples!r}")
    values = values.detach().double().flatten().cpu()
    n = values.numel()
    if n < 2:
        return math.nan, math.nan
    index = torch.randint(0, n, (resamples, n), generator=generator, device="cpu")
    medians = torch.quantile(values[index], 0.5, dim=1)  # (R,)
    tail = (1.0 - level) / 2.0
    lo, hi = torch.quantile(medians, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(lo), float(hi)


#: Fewest paired points from which a difference of medians is ever called one. With ``n`` points
#: all on one side of the null, the sign test's two-sided p-value is ``2 / 2**n``, below 0.05 only
#: from ``n = 6``; a percentile bootstrap of 3 points would still give an interval excluding it.
MIN_POINTS = 6


def verdict(lo: float, hi: float, *, null: float = 1.0) -> str:
    """``"lower"`` if the interval lies below ``null``, ``"higher"`` above, else no difference."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return SAME
    if hi < null:
        return LOWER
    if lo > null:
        return HIGHER
    return SAME


@dataclass
class RatioInterval:
    """The median of per-point ratios ``b / a`` with its bootstrap interval, on ``n`` points."""

    a_median: float
    b_median: float
    ratio: float
    ci: tuple[float, float]
    n: int
    verdict: str

    def to_dict(self) -> dict[str, object]:
        return {"a_median": self.a_median, "b_median": self.b_median, "ratio": self.ratio,
                "ci": list(self.ci), "n": self.n, "verdict": self.verdict}


def paired_ratio(a: Tensor, b: Tensor, *, mask: Tensor | None = None, resamples: int = 2000,
                 level: float = 0.95, generator: torch.Generator | None = None) -> RatioInterval:
    """Median of ``b_i / a_i`` over the points where ``mask`` holds and both are finite and positive.

    The verdict comes from the interval alone, and is "no significant difference" on fewer than
    :data:`MIN_POINTS` points whatever the interval (no 95 % test can decide on so few).

    Args:
        a, b: per-point values ``(n,)`` of the two models on the same points.
        mask: ``(n,)`` bool, the points to use (e.g. both models classify them correctly).
        resamples, level, generator: as in :func:`bootstrap_median`.
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"a and b must be paired 1-D tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    keep = torch.isfinite(a) & torch.isfinite(b) & (a > 0) & (b > 0)
    if mask is not None:
        keep &= mask.detach().cpu().bool()
    ratios = b[keep] / a[keep]
    lo, hi = bootstrap_median(ratios, resamples=resamples, level=level, generator=generator)
    n = int(keep.sum())
    return RatioInterval(a_median=median(a[keep]), b_median=median(b[keep]), ratio=median(ratios),
                         ci=(lo, hi), n=n, verdict=verdict(lo, hi) if n >= MIN_POINTS else SAME)


def proportion_interval(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95 % score interval (Wilson 1927) of a proportion ``successes / n``; ``(nan, nan)`` if ``n = 0``."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(a: Tensor, b: Tensor, *, resamples: int = 2000,
                        generator: torch.Generator | None = None) -> tuple[float, tuple[float, float]]:
    """Mean of ``b - a`` over paired 0/1 (or real) outcomes ``(n,)`` with its percentile-bootstrap
    95 % interval: ``(difference, (lo, hi))``; a change is one only if the interval excludes 0."""
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"a and b must be paired with at least 2 points, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = b - a
    index = torch.randint(0, diff.numel(), (resamples, diff.numel()), generator=generator)
    means = diff[index].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(diff.mean()), (float(lo), float(hi))
