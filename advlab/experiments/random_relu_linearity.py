"""How linear random ReLU networks are along the gradient, against the step length and bottleneck.

Bartlett, Bubeck & Cherapanamjeri (2021) show that a random ReLU network is nearly linear on the
scale ``||x|| / sqrt(d)`` around a typical input, which is why a single gradient step flips its
sign, *provided* the hidden layers are wide (their theorem needs every width large compared with
the depth and with a power of the log of the others). A narrow bottleneck breaks this. Here, along
the unit gradient ``u = grad f / ||grad f||`` and for steps ``delta = s ||x|| / sqrt(d) u``,

    relative linearity error = |f(x + delta) - f(x) - grad f^T delta| / |grad f^T delta|,

the median over inputs and networks, per bottleneck width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from advlab.attacks._core import model_guard
from advlab.geometry.random_relu import random_relu_network, sphere_points
from advlab.report.plotting import new_figure, save_figure

#: Step lengths in units of ``||x|| / sqrt(d)``.
STEPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def linearity_errors(model: torch.nn.Module, x: torch.Tensor, steps: Sequence[float]) -> torch.Tensor:
    """Relative linearity error ``(len(steps), N)`` along the unit gradient at each step length."""
    dim = x.shape[1]
    with model_guard(model), torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        value = model(x_req).reshape(len(x))
        (gradient,) = torch.autograd.grad(value.sum(), x_req)
    norm = gradient.norm(dim=1).clamp_min(1e-30)
    unit = gradient / norm[:, None]
    scale = x.norm(dim=1) / math.sqrt(dim)  # (N,)
    rows = []
    with torch.no_grad():
        for s in steps:
            length = s * scale
            after = model(x + length[:, None] * unit).reshape(len(x))
            linear_change = norm * length
            rows.append((after - value.detach() - linear_change).abs() / linear_change.clamp_min(1e-30))
    return torch.stack(rows)


def linearity_vs_step(*, input_dim: int = 100, width: int = 1000,
                      bottlenecks: Sequence[int | None] = (None, 50, 10), steps: Sequence[float] = STEPS,
                      networks: int = 10, samples: int = 50,
                      generator: torch.Generator | None = None) -> list[dict[str, Any]]:
    """One row per bottleneck width (``None``: widths ``(width, width)``, else ``(width, b, width)``):
    ``steps`` and the median, 10 % and 90 % quantiles of the error over ``networks x samples``."""
    rows = []
    for bottleneck in bottlenecks:
        widths = (width, width) if bottleneck is None else (width, int(bottleneck), width)
        errors = torch.cat([linearity_errors(random_relu_network(input_dim, widths, generator=generator),
                                             sphere_points(samples, input_dim, generator=generator), steps)
                            for _ in range(networks)], dim=1).double()  # (S, networks * samples)
        q = torch.quantile(errors, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=1)
        rows.append({"bottleneck": bottleneck, "widths": list(widths), "input_dim": input_dim,
                     "steps": list(steps), "n": int(errors.shape[1]), "networks": networks,
                     "q10": q[0].tolist(), "median": q[1].tolist(), "q90": q[2].tolist()})
    return rows


def plot_linearity(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Median relative linearity error (10-90 % band) against the step length, one line per width."""
    fig, ax = new_figure(width=5.0, height=3.8)
    for index, row in enumerate(rows):
        label = "no bottleneck" if row["bottleneck"] is None else f"bottleneck {row['bottleneck']}"
        colour = f"C{index % 10}"
        ax.plot(row["steps"], row["median"], "o-", color=colour, label=f"{label} (n={row['n']})")
        ax.fill_between(row["steps"], row["q10"], row["q90"], color=colour, alpha=0.15)
    ax.set(xscale="log", yscale="log", xlabel="step length / (‖x‖/√d)",
           ylabel="|f(x+δ) − f(x) − ∇f·δ| / |∇f·δ|",
           title=f"Linearity along the gradient, d = {rows[0]['input_dim']}")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
