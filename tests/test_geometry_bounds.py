"""CURE's bounds on a loss that is exactly quadratic: lower <= r* <= upper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.geometry import curvature_bounds

A = torch.tensor([[2.0, 0.5], [0.5, 0.7]], dtype=torch.float64)  # positive definite
B = torch.tensor([0.3, -0.2], dtype=torch.float64)


def quadratic(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``l(z) = z^T A z / 2 + b^T z`` per sample (the model is the identity)."""
    return 0.5 * ((z @ A) * z).sum(dim=1) + z @ B


def exact_minimal_step(x: torch.Tensor, threshold: float, angles: int = 20000) -> torch.Tensor:
    """min ||r|| with l(x + r) >= t, by solving the quadratic along many directions (d = 2)."""
    theta = torch.linspace(0, 2 * math.pi, angles, dtype=torch.float64)
    directions = torch.stack([theta.cos(), theta.sin()], dim=1)  # (M, 2)
    out = []
    for point in x:
        gradient = A @ point + B
        linear = directions @ gradient  # (M,)
        curvature = ((directions @ A) * directions).sum(dim=1)
        gap = threshold - float(quadratic(point[None], None))
        rho = (-linear + (linear.pow(2) + 2 * curvature * gap).sqrt()) / curvature  # positive root
        out.append(rho.min())
    return torch.stack(out)


def test_bounds_bracket_the_exact_minimal_step_on_a_quadratic_loss():
    x = torch.rand(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    threshold = 1.5
    bounds = curvature_bounds(nn.Identity(), x, torch.zeros(16, dtype=torch.long), loss=quadratic,
                              threshold=threshold, steps=2, generator=torch.Generator().manual_seed(0))
    exact = exact_minimal_step(x, threshold)
    assert bool((bounds["lower"] <= exact * (1 + 1e-6)).all())
    assert bool((exact <= bounds["upper"] * (1 + 1e-6)).all())
    assert bool((bounds["upper"] <= bounds["upper_eigenvector"] + 1e-12).all())
    assert bool((bounds["lower"] < bounds["upper"]).any())  # a real bracket, not the first-order value


def test_random_relu_narrow_bottleneck_is_outside_the_conditions():
    from advlab.experiments.random_relu import random_relu_experiment
    from advlab.experiments.random_relu_claims import summarise_claims
    from advlab.experiments.random_relu_linearity import linearity_vs_step

    generator = torch.Generator().manual_seed(0)
    rows = random_relu_experiment((100,), [(200,), (200, 5, 200)], (1,), samples=10, networks=10,
                                  generator=generator)
    assert all(row["networks"] == 10 and len(row["flip_rate_per_network"]) == 10 for row in rows)
    claims = summarise_claims(rows)
    narrow = [c for c in claims if c.startswith("widths 200-5-200")]
    assert narrow and all("outside the theorem's conditions" in c for c in narrow)
    assert not any("NOT" in c for c in narrow)
    wide = [c for c in claims if c.startswith("widths 200:")]
    assert wide and "outside" not in wide[0]
    linearity = linearity_vs_step(input_dim=50, width=200, bottlenecks=(None, 5), steps=(1.0,),
                                  networks=3, samples=20, generator=generator)
    assert linearity[1]["median"][0] > linearity[0]["median"][0]  # the bottleneck is less linear


@pytest.mark.slow
def test_spirals_default_overfits(tmp_path):
    from advlab.experiments.spirals import spirals_compare

    result = spirals_compare(tmp_path, seed=0)  # the defaults of advlab theory spirals
    large, small = result["large"], result["small"]
    assert large["train_accuracy"] >= 0.9
    assert large["train_accuracy"] >= large["test_accuracy"] + 0.1  # fits the flipped labels
    assert small["train_accuracy"] < large["train_accuracy"]
