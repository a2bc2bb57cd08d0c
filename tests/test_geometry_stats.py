"""Paired bootstrap statistics, scale-h curvature and compare() on tiny models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.geometry import compare, hvp, paired_ratio
from advlab.geometry.scale import ScaleHessianOperator, eigenvalue_profile, scale_hessian_eigs
from advlab.geometry.stats import bootstrap_median, median, verdict


def test_true_median_of_even_count():
    assert median(torch.tensor([1.0, 2.0, 3.0, 10.0])) == 2.5
    assert math.isnan(median(torch.tensor([math.nan])))


def test_bootstrap_interval_covers_known_ratio_about_95_percent():
    generator = torch.Generator().manual_seed(0)
    true_ratio, trials, covered = 0.7, 200, 0
    for _ in range(trials):
        a = torch.rand(100, generator=generator, dtype=torch.float64) + 0.5
        noise = torch.randn(100, generator=generator, dtype=torch.float64) * 0.3  # median 0
        b = a * true_ratio * noise.exp()
        row = paired_ratio(a, b, resamples=500, generator=generator)
        covered += row.ci[0] <= true_ratio <= row.ci[1]
    assert 0.88 <= covered / trials <= 0.995


def test_verdict_only_from_the_interval():
    assert verdict(0.5, 0.9) == "lower" and verdict(1.1, 1.3) == "higher"
    assert verdict(0.9, 1.1) == "no significant difference"
    assert verdict(math.nan, 1.0) == "no significant difference"


def test_bad_bootstrap_arguments():
    with pytest.raises(ValueError, match="level"):
        bootstrap_median(torch.ones(5), level=1.5)
    with pytest.raises(ValueError, match="paired"):
        paired_ratio(torch.ones(3), torch.ones(4))


def _softplus_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Softplus(), nn.Linear(16, 3)).double().eval()


def test_scale_hvp_converges_to_exact_hvp_as_h_goes_to_zero():
    model = _softplus_net()
    x = torch.rand(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    v = torch.randn(4, 6, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    exact = hvp(model, x, y, v)
    errors = [float((ScaleHessianOperator(model, x, y, h=h)(v) - exact).norm() / exact.norm())
              for h in (1e-1, 1e-2, 1e-3)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5


def test_scale_h_rejects_bad_h_and_profile_shapes():
    model = _softplus_net()
    with pytest.raises(ValueError, match="h must be a positive"):
        ScaleHessianOperator(model, torch.rand(2, 6, dtype=torch.float64), h=0.0)
    values = scale_hessian_eigs(model, torch.rand(3, 6, dtype=torch.float64), k=4, h=0.01, steps=6,
                                generator=torch.Generator().manual_seed(0))
    profile = eigenvalue_profile(values)
    assert profile["median"].shape == (4,) and bool((profile["low"] <= profile["high"]).all())


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def test_compare_rows_and_text():
    x = torch.rand(12, 8, generator=torch.Generator().manual_seed(1))
    model_a, model_b = _mlp(0), _mlp(1)
    with torch.no_grad():
        y = model_a(x).argmax(1)
        model_b[3].weight.copy_(model_a[3].weight * 0.5)  # same predictions, scaled logits
        model_b[3].bias.copy_(model_a[3].bias * 0.5)
        model_b[1].load_state_dict(model_a[1].state_dict())
    result = compare(model_a, model_b, x, y, generator=torch.Generator().manual_seed(0),
                     quantities=("minimal_l2", "top_eigenvalue", "hessian_frobenius"), steps=6,
                     resamples=200)
    assert set(result.rows) == {"minimal_l2", "top_eigenvalue", "hessian_frobenius"}
    row = result.rows["minimal_l2"]
    assert row["n"] == 12 and row["ratio"] == pytest.approx(1.0, rel=1e-3)  # same boundary
    assert row["verdict"] == "no significant difference" or row["ci"][0] <= 1.0 + 1e-3
    assert result.rows["hessian_frobenius"]["method"] == "exact"
    text = "\n".join(result.lines())
    assert "95 %" in text and "n=12" in text
    with pytest.raises(ValueError, match="unknown quantities"):
        compare(model_a, model_b, x, y, quantities=("curviness",))


def test_no_verdict_from_too_few_points():
    from advlab.geometry.stats import MIN_POINTS

    a = torch.ones(MIN_POINTS - 1)
    few = paired_ratio(a, 3 * a, generator=torch.Generator().manual_seed(0))
    assert few.ci[0] > 1 and few.verdict == "no significant difference"
    a = torch.ones(MIN_POINTS)
    enough = paired_ratio(a, 3 * a, generator=torch.Generator().manual_seed(0))
    assert enough.verdict == "higher"
