"""Plain-language verdicts on the random-ReLU claims, computed from the measured rows.

The rows are those of :func:`advlab.experiments.random_relu.random_relu_experiment`; the claims
are those of Bubeck et al. (2021) and Bartlett et al. (2021): a single gradient step flips the
sign (flip rate near 1) and its relative length falls like ``d^-1/2``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

Row = dict[str, Any]


def config_label(row: Row) -> str:
    block = "-".join(str(w) for w in row["block"])
    return f"widths {block}" + (f" x{row['depth']}" if row["depth"] != 1 else "")


def _slope(dims: list[float], values: list[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(dims)``."""
    xs, ys = [math.log(d) for d in dims], [math.log(v) for v in values]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else math.nan


#: The width conditions used for the verdicts: the narrowest hidden layer at least this wide
#: and at least ``DEPTH_FACTOR`` times the number of hidden layers (Bartlett, Bubeck &
#: Cherapanamjeri 2021 need every width large compared with the depth; their constants are not
#: explicit, so these are the conservative values advlab uses), and ``d >= min_dim``.
MIN_WIDTH, DEPTH_FACTOR = 100, 10


def outside_conditions(row: Row, *, min_dim: int = 100) -> str | None:
    """Why ``row``'s configuration is outside the theorem's conditions, or ``None`` if inside."""
    layers = len(row["widths"])
    if row["bottleneck"] < MIN_WIDTH:
        return f"narrowest width {row['bottleneck']} < {MIN_WIDTH}"
    if row["bottleneck"] < DEPTH_FACTOR * layers:
        return f"narrowest width {row['bottleneck']} < {DEPTH_FACTOR} x {layers} hidden layers"
    if row["input_dim"] < min_dim:
        return f"d = {row['input_dim']} < {min_dim}"
    return None


def summarise_claims(rows: list[Row], *, flip_threshold: float = 0.9, min_dim: int = 100) -> list[str]:
    """Plain-language verdicts on the papers' claims, computed from the measured rows.

    Per width/depth configuration: whether the flip rate reaches ``flip_threshold`` for every
    ``d >= min_dim`` (one-step flip), and whether ``||delta|| / ||x||`` falls like ``d^-1/2``
    (log-log slope within ``[-0.65, -0.35]``, needs two or more ``d``); then the effect of
    bottlenecks and of depth, relative to the other configurations.
    """
    lines: list[str] = []
    configs: dict[str, list[Row]] = {}
    for row in rows:
        configs.setdefault(config_label(row), []).append(row)
    for label, group in configs.items():
        lines += _flip_claim(label, group, flip_threshold, min_dim) + _scale_claim(label, group)
    return lines + _bottleneck_claims(rows) + _depth_claims(rows)


def _flip_claim(label: str, group: list[Row], flip_threshold: float, min_dim: int) -> list[str]:
    large = [r for r in group if r["input_dim"] >= min_dim]
    if not large:
        return []
    worst = min(large, key=lambda r: r["flip_rate"])
    error = max(r["linearity_error_median"] for r in large)
    spread = ""
    if "flip_rate_min" in worst:
        spread = (f" over {worst['networks']} networks, per-network range "
                  f"[{worst['flip_rate_min']:.2f}, {worst['flip_rate_max']:.2f}]")
    reason = outside_conditions(worst, min_dim=min_dim)
    if reason is not None:
        verdict = f"outside the theorem's conditions ({reason}): no verdict"
    else:
        verdict = ("supports" if worst["flip_rate"] >= flip_threshold else "does NOT support") + \
            f" the one-step flip (threshold {flip_threshold:g})"
    return [f"{label}: flip rate >= {worst['flip_rate']:.3f} for all d >= {min_dim} (lowest at "
            f"d={worst['input_dim']}{spread}; median linearity error <= {error:.3g}, flip needs "
            f"< tau = {worst['tau']:g}): {verdict}"]


def _scale_claim(label: str, group: list[Row]) -> list[str]:
    dims = sorted({r["input_dim"] for r in group})
    if len(dims) < 2:
        return []
    scaled = [r["scaled_step_median"] for r in group]
    slope = _slope([r["input_dim"] for r in group], [r["relative_step_median"] for r in group])
    reason = outside_conditions(max(group, key=lambda r: r["input_dim"]), min_dim=0)
    verdict = "supports" if -0.65 <= slope <= -0.35 else "does NOT support"
    if reason is not None:
        verdict = f"outside the theorem's conditions ({reason}); for information, would {verdict}"
    return [f"{label}: ||delta||/||x|| * sqrt(d) stays within [{min(scaled):.3g}, {max(scaled):.3g}] "
            f"across d in {dims}; ||delta||/||x|| scales as d^{slope:.2f} (prediction d^-0.5): "
            f"{verdict} the 1/sqrt(d) scale"]


def _bottleneck_claims(rows: list[Row]) -> list[str]:
    plain = [r for r in rows if r["bottleneck"] == r["max_width"]]
    narrow = [r for r in rows if r["bottleneck"] < r["max_width"]]
    if not plain or not narrow:
        return []
    base_step = statistics.median(r["scaled_step_median"] for r in plain)
    base_flip = statistics.fmean(r["flip_rate"] for r in plain)
    lines = []
    for width in sorted({r["bottleneck"] for r in narrow}):
        group = [r for r in narrow if r["bottleneck"] == width]
        step = statistics.median(r["scaled_step_median"] for r in group)
        flip = statistics.fmean(r["flip_rate"] for r in group)
        lines.append(f"a bottleneck of width {width} changes the scaled step by a factor "
                     f"{step / base_step:.2f} (median {step:.3g} vs {base_step:.3g} without a "
                     f"bottleneck) and the mean flip rate from {base_flip:.3f} to {flip:.3f}")
    return lines


def _depth_claims(rows: list[Row]) -> list[str]:
    depths = sorted({r["depth"] for r in rows})
    if len(depths) < 2:
        return []
    parts = []
    for depth in depths:
        group = [r for r in rows if r["depth"] == depth]
        parts.append(f"depth x{depth}: flip {statistics.fmean(r['flip_rate'] for r in group):.3f}, "
                     f"scaled step {statistics.median(r['scaled_step_median'] for r in group):.3g}")
    return ["deeper networks (block repeated): " + "; ".join(parts)]
