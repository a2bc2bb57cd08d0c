"""The random-ReLU experiment: one gradient step flips random ReLU networks.

Bubeck, Cherapanamjeri, Gidel & Tachet des Combes (2021) and Bartlett, Bubeck & Cherapanamjeri
(2021) (see :mod:`advlab.geometry.random_relu` for the claim and the measured step). Per
configuration (input dimension, hidden widths, depth) we report

* ``flip_rate``: fraction of inputs with ``sign f(x + delta) != sign f(x)``;
* ``scaled_step``: ``||delta|| / ||x|| * sqrt(d)`` (the claim: ``O(1)``, independent of ``d``);
* ``linearity_error``: the sign flips exactly when it is below ``tau``.

:func:`random_relu_experiment` sweeps the grid, :func:`random_relu_sweep` is the entry point of
``advlab theory random-relu`` (figure, ``random_relu.json`` and the verdicts of
:func:`~advlab.experiments.random_relu_claims.summarise_claims`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advlab._utils import atomic_write_json
from advlab.experiments.random_relu_claims import Row, config_label, summarise_claims
from advlab.geometry.random_relu import one_step_attack, random_relu_network, sphere_points
from advlab.report.plotting import new_figure, save_figure

__all__ = ["DEPTHS", "INPUT_DIMS", "QUICK_INPUT_DIMS", "WIDTHS", "plot_random_relu",
           "random_relu_experiment", "random_relu_sweep", "summarise_claims"]

INPUT_DIMS = (10, 100, 1000)
QUICK_INPUT_DIMS = (10, 100)
#: Hidden-width blocks: narrow, wide, and wide with a bottleneck of width 10.
WIDTHS = ((100,), (1000,), (1000, 10, 1000))
#: Each block is repeated this many times.
DEPTHS = (1, 2, 4)


def _summary(measured: dict[str, Tensor], per_network: list[float]) -> Row:
    scaled, error = measured["scaled_step"].double(), measured["linearity_error"].double()
    rates = torch.tensor(per_network, dtype=torch.float64)
    return {
        "networks": len(per_network), "flip_rate_per_network": per_network,
        "flip_rate_min": float(rates.min()), "flip_rate_max": float(rates.max()),
        "flip_rate_q10": float(rates.quantile(0.1)), "flip_rate_q90": float(rates.quantile(0.9)),
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
                           depths: Sequence[int] = (1,), *, samples: int = 100, networks: int = 10,
                           tau: float = 0.5, generator: torch.Generator | None = None) -> list[Row]:
    """Sweep input dimension, width configuration and depth; one row per configuration.

    Args:
        input_dims: values of ``d``.
        widths_list: hidden-width blocks, e.g. ``[(500,), (1000, 20, 1000)]`` (the second has a
            bottleneck of width 20).
        depths: each block is repeated ``depth`` times: ``(500,)`` at depth 3 is ``(500, 500, 500)``.
        samples: inputs per network; ``networks``: independent networks per configuration
            (default 10: flip rates vary widely between networks of one configuration; the
            rows carry the per-network rates and their range).
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
                    model = random_relu_network(dim, hidden, generator=generator)
                    points = sphere_points(samples, dim, generator=generator)
                    parts.append(one_step_attack(model, points, tau=tau))
                measured = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
                rows.append({"input_dim": int(dim), "widths": list(hidden), "block": list(block),
                             "depth": int(depth), "bottleneck": min(hidden), "max_width": max(hidden),
                             "samples": samples * networks, "tau": float(tau),
                             **_summary(measured, [float(p["flipped"].double().mean()) for p in parts])})
    return rows


def plot_random_relu(rows: list[Row], path: str | Path, *,
                     title: str = "One gradient step on random ReLU networks") -> Path:
    """Flip rate, scaled step (10-90% band) and linearity error against ``d``, one line per config."""
    configs: dict[str, list[Row]] = {}
    for row in rows:
        configs.setdefault(config_label(row), []).append(row)
    fig, axes = new_figure(ncols=3, width=4.2, height=3.8)
    for index, (label, group) in enumerate(configs.items()):
        group = sorted(group, key=lambda r: r["input_dim"])
        dims = [r["input_dim"] for r in group]
        colour = f"C{index % 10}"
        axes[0].plot(dims, [r["flip_rate"] for r in group], "o-", color=colour, label=label)
        if "flip_rate_min" in group[0]:
            axes[0].fill_between(dims, [r["flip_rate_min"] for r in group], [r["flip_rate_max"] for r in group],
                                 color=colour, alpha=0.12)
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


def random_relu_sweep(out_dir: str | Path, *, quick: bool = False,
                      input_dims: Sequence[int] | None = None,
                      widths: Sequence[Sequence[int]] = WIDTHS, depths: Sequence[int] = DEPTHS,
                      samples: int | None = None, tau: float = 0.5, seed: int = 0, networks: int = 10,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
    """Run the random-ReLU sweep, write ``random_relu.png`` and ``random_relu.json``.

    Args:
        out_dir: output folder.
        quick: the small grid (``d`` in :data:`QUICK_INPUT_DIMS`, 50 inputs per network)
            instead of :data:`INPUT_DIMS` with 200 inputs.
        input_dims, samples: override the grid's input dimensions / inputs per network.
        widths, depths: hidden-width blocks and how often each is repeated.
        tau: overshoot of the gradient step (the flip needs a linearity error below ``tau``).
        seed: seeds the generator when none is given (the entry point of ``advlab theory``).
        generator: draws the networks and the inputs.

    Returns:
        dict: ``params``, ``rows`` (one per configuration, see ``random_relu_experiment``),
        ``claims`` (verdict lines), ``figures`` / ``captions``.
    """
    out_dir = Path(out_dir)
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    dims = tuple(input_dims) if input_dims is not None else (QUICK_INPUT_DIMS if quick else INPUT_DIMS)
    count = samples if samples is not None else (50 if quick else 200)
    rows = random_relu_experiment(dims, widths, depths, samples=count, tau=tau, networks=networks,
                                  generator=generator)
    path = plot_random_relu(rows, out_dir / "random_relu.png",
                            title="One gradient step on random ReLU networks")
    from advlab.experiments.random_relu_linearity import linearity_vs_step, plot_linearity

    linearity = linearity_vs_step(input_dim=100, networks=3 if quick else 10, samples=count // 2 or 1,
                                  generator=generator)
    linearity_path = plot_linearity(linearity, out_dir / "random_relu_linearity.png")
    result = {
        "params": {"input_dims": list(dims), "widths": [list(w) for w in widths],
                   "depths": list(depths), "samples": count, "tau": tau, "quick": quick,
                   "networks": networks},
        "rows": rows,
        "linearity": linearity,
        "claims": summarise_claims(rows),
        "figures": {"random_relu": path.name, "random_relu_linearity": linearity_path.name},
        "captions": {"random_relu": (
            "Random bias-free ReLU networks with Gaussian weights, inputs on the sphere of radius "
            "√d: flip rate of the single gradient step δ = -(1+τ) f(x) ∇f / ‖∇f‖² (left), its "
            "length ‖δ‖/‖x‖·√d with the 10-90% band (middle, the claim: O(1)), and how far f is "
            f"from linear along the step (right), per width/depth configuration; {networks} networks "
            "per configuration, the shaded band on the left is the range of their flip rates."),
            "random_relu_linearity": (
            "Relative linearity error along the unit gradient against the step length (in units "
            "of ‖x‖/√d), median and 10-90 % band over networks and inputs, d = 100, hidden widths "
            "1000-1000 or 1000-b-1000: a narrow bottleneck b makes the network far less linear on "
            "the scale of the theorem.")},
    }
    atomic_write_json(out_dir / "random_relu.json", result)
    return result
