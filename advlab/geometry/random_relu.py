"""One gradient step flips random ReLU networks: the experiment of Bubeck et al. and Bartlett et al.

Bubeck, Cherapanamjeri, Gidel & Tachet des Combes (2021), "A single gradient step finds
adversarial examples on random two-layers neural networks", and Bartlett, Bubeck &
Cherapanamjeri (2021), "Adversarial examples in multi-layer random ReLU networks": for a ReLU
network ``f: R^d -> R`` with i.i.d. Gaussian weights ``N(0, 1/fan_in)`` and an input ``x`` with
``||x|| = sqrt(d)``, the step

    delta = -(1 + tau) f(x) grad f(x) / ||grad f(x)||^2

(the step that would land on ``-tau f(x)`` if ``f`` were linear) changes the sign of ``f`` with
high probability, and its length is of order ``||x|| / sqrt(d)``: the network is nearly linear
on that scale. We measure, per configuration (input dimension, hidden widths, depth):

* ``flip_rate``: fraction of inputs with ``sign f(x + delta) != sign f(x)``;
* ``scaled_step``: ``||delta|| / ||x|| * sqrt(d)`` (the claim: ``O(1)``, independent of ``d``);
* ``linearity_error``: ``|f(x + delta) - (f(x) + grad f(x)^T delta)| / |f(x)|``; the sign flips
  exactly when this is below ``tau``.

Networks come from the model registry (``create_model("random_relu", num_classes=1, ...)``,
bias-free), seeded from ``generator``; inputs are uniform on the sphere of radius ``sqrt(d)``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard
from advlab.geometry._common import new_figure, random_normal, save_figure

Row = dict[str, Any]


def random_relu_network(input_dim: int, widths: Sequence[int],
                        generator: torch.Generator | None = None) -> nn.Module:
    """A scalar random ReLU network ``(N, d) -> (N, 1)`` from the registry, seeded by ``generator``."""
    from advlab.models import create_model

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return create_model("random_relu", num_classes=1, input_shape=(int(input_dim),),
                        widths=tuple(int(w) for w in widths), seed=seed).eval()


def sphere_points(count: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """``count`` points uniform on the sphere of radius ``sqrt(dim)``: ``(count, dim)``."""
    points = random_normal((count, dim), generator)
    return points * (math.sqrt(dim) / points.norm(dim=1, keepdim=True).clamp_min(1e-12))


def one_step_attack(model: nn.Module, x: Tensor, tau: float = 0.5) -> dict[str, Tensor]:
    """The single gradient step on a scalar network and what it does, all ``(N,)`` tensors.

    Returns ``f``, ``f_after``, ``flipped`` (bool), ``step_norm`` (``||delta||``),
    ``relative_step`` (``||delta|| / ||x||``), ``scaled_step`` (times ``sqrt(d)``),
    ``linearity_error`` and ``gradient_norm``.
    """
    with model_guard(model), torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        value = model(x_req).reshape(len(x))  # (N,)
        (gradient,) = torch.autograd.grad(value.sum(), x_req)
        value = value.detach()
        squared = gradient.pow(2).sum(dim=1).clamp_min(1e-30)  # (N,)
        delta = -(1.0 + tau) * (value / squared)[:, None] * gradient  # (N, d)
        with torch.no_grad():
            after = model(x + delta).reshape(len(x))
    step_norm = delta.norm(dim=1)
    relative = step_norm / x.norm(dim=1)
    linear = value + (gradient * delta).sum(dim=1)  # = -tau * f(x)
    return {
        "f": value, "f_after": after,
        "flipped": torch.sign(after) != torch.sign(value),
        "step_norm": step_norm, "relative_step": relative,
        "scaled_step": relative * math.sqrt(x.shape[1]),
        "linearity_error": (after - linear).abs() / value.abs().clamp_min(1e-30),
        "gradient_norm": squared.sqrt(),
    }


def _summary(measured: dict[str, Tensor]) -> Row:
    scaled, error = measured["scaled_step"].double(), measured["linearity_error"].double()
    return {
        "flip_rate": float(measured["flipped"].double().mean()),
        "scaled_step_median": float(scaled.median()),
        "scaled_step_q10": float(scaled.quantile(0.1)),
        "scaled_step_q90": float(scaled.quantile(0.9)),
        "relative_step_median": float(measured["relative_step"].double().median()),
        "linearity_error_median": float(error.median()),
        "linearity_error_q90": float(error.quantile(0.9)),
        "abs_f_median": float(measured["f"].double().abs().median()),
        "gradient_norm_median": float(measured["gradient_norm"].double().median()),
    }


def random_relu_experiment(input_dims: Sequence[int], widths_list: Sequence[Sequence[int]],
                           depths: Sequence[int] = (1,), *, samples: int = 100, networks: int = 1,
                           tau: float = 0.5, generator: torch.Generator | None = None) -> list[Row]:
    """Sweep input dimension, width configuration and depth; one row per configuration.

    Args:
        input_dims: values of ``d``.
        widths_list: hidden-width blocks, e.g. ``[(500,), (1000, 20, 1000)]`` (the second has a
            bottleneck of width 20).
        depths: each block is repeated ``depth`` times: ``(500,)`` at depth 3 is ``(500, 500, 500)``.
        samples: inputs per network; ``networks``: independent networks per configuration.
        tau: overshoot of the step (``> 0``; the sign flips iff the linearity error is ``< tau``).
        generator: draws the networks' seeds and the inputs.

    Returns:
        list of JSON-friendly dicts: ``input_dim``, ``widths`` (all hidden layers), ``block``,
        ``depth``, ``bottleneck`` (smallest width), ``max_width``, ``samples``, ``tau`` and the
        measurements ``flip_rate``, ``scaled_step_median`` / ``_q10`` / ``_q90``,
        ``relative_step_median``, ``linearity_error_median`` / ``_q90``, ``abs_f_median``,
        ``gradient_norm_median``.
    """
    if not tau > 0:
        raise ValueError(f"tau must be positive (the step overshoots the linear zero by tau), got {tau!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    rows: list[Row] = []
    for dim in input_dims:
        for block in widths_list:
            for depth in depths:
                hidden = tuple(int(w) for w in block) * int(depth)
                parts = []
                for _ in range(networks):
                    model = random_relu_network(dim, hidden, generator)
                    parts.append(one_step_attack(model, sphere_points(samples, dim, generator), tau))
                measured = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
                rows.append({"input_dim": int(dim), "widths": list(hidden), "block": list(block),
                             "depth": int(depth), "bottleneck": min(hidden), "max_width": max(hidden),
                             "samples": samples * networks, "tau": float(tau), **_summary(measured)})
    return rows


def _config_label(row: Row) -> str:
    block = "-".join(str(w) for w in row["block"])
    return f"widths {block}" + (f" x{row['depth']}" if row["depth"] != 1 else "")


def _slope(dims: list[float], values: list[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(dims)``."""
    xs, ys = [math.log(d) for d in dims], [math.log(v) for v in values]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else math.nan


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
        configs.setdefault(_config_label(row), []).append(row)
    for label, group in configs.items():
        lines += _flip_claim(label, group, flip_threshold, min_dim) + _scale_claim(label, group)
    return lines + _bottleneck_claims(rows) + _depth_claims(rows)


def _flip_claim(label: str, group: list[Row], flip_threshold: float, min_dim: int) -> list[str]:
    large = [r for r in group if r["input_dim"] >= min_dim]
    if not large:
        return []
    worst = min(large, key=lambda r: r["flip_rate"])
    error = max(r["linearity_error_median"] for r in large)
    verdict = "supports" if worst["flip_rate"] >= flip_threshold else "does NOT support"
    return [f"{label}: flip rate >= {worst['flip_rate']:.3f} for all d >= {min_dim} (lowest at "
            f"d={worst['input_dim']}; median linearity error <= {error:.3g}, flip needs < tau = "
            f"{worst['tau']:g}): {verdict} the one-step flip (threshold {flip_threshold:g})"]


def _scale_claim(label: str, group: list[Row]) -> list[str]:
    dims = sorted({r["input_dim"] for r in group})
    if len(dims) < 2:
        return []
    scaled = [r["scaled_step_median"] for r in group]
    slope = _slope([r["input_dim"] for r in group], [r["relative_step_median"] for r in group])
    verdict = "supports" if -0.65 <= slope <= -0.35 else "does NOT support"
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


def plot_random_relu(rows: list[Row], path: str | Path, *,
                     title: str = "One gradient step on random ReLU networks") -> Path:
    """Flip rate, scaled step (10-90% band) and linearity error against ``d``, one line per config."""
    configs: dict[str, list[Row]] = {}
    for row in rows:
        configs.setdefault(_config_label(row), []).append(row)
    fig, axes = new_figure(ncols=3, width=4.2, height=3.8)
    for index, (label, group) in enumerate(configs.items()):
        group = sorted(group, key=lambda r: r["input_dim"])
        dims = [r["input_dim"] for r in group]
        colour = f"C{index % 10}"
        axes[0].plot(dims, [r["flip_rate"] for r in group], "o-", color=colour, label=label)
        axes[1].plot(dims, [r["scaled_step_median"] for r in group], "o-", color=colour, label=label)
        axes[1].fill_between(dims, [r["scaled_step_q10"] for r in group],
                             [r["scaled_step_q90"] for r in group], color=colour, alpha=0.15)
        axes[2].plot(dims, [r["linearity_error_median"] for r in group], "o-", color=colour, label=label)
    axes[0].set(ylabel="flip rate", ylim=(-0.02, 1.02), title="sign f(x+δ) ≠ sign f(x)")
    axes[1].set(ylabel="‖δ‖ / ‖x‖ · √d", title="step length, scaled")
    axes[2].set(ylabel="|f(x+δ) − linear| / |f(x)|", title="linearity error", yscale="log")
    for ax in axes:
        ax.set(xscale="log", xlabel="input dimension d")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
