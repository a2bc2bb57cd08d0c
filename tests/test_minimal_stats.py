"""Minimal-norm statistics, the accuracy curve they imply, and random-noise robustness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.evaluation.minimal import (
    accuracy_at,
    cross_check,
    minimal_norm_statistics,
    noise_robustness,
    subspace_minimal_norm,
)


def test_statistics_match_the_norms_and_the_ensemble(digits_mlp, digits):
    _, _, x, y = digits
    x, y = x[:64], y[:64]
    stats = minimal_norm_statistics(digits_mlp, x, y, attack="deepfool", norm="l2")
    correct = digits_mlp(x).argmax(1) == y
    assert stats.success_rate > 0.95
    assert torch.all(stats.norms[~correct] == 0)
    found = correct & torch.isfinite(stats.norms)
    expected = (stats.norms[found] / x[found].flatten(1).norm(dim=1)).mean().item()
    assert stats.rho_adv == pytest.approx(expected, rel=1e-5)
    # the implied curve starts at clean accuracy and falls to the failures
    assert stats.curve[0][1] == pytest.approx(correct.float().mean().item())
    assert [a for _, a in stats.curve] == sorted((a for _, a in stats.curve), reverse=True)
    results = evaluate(digits_mlp, x, y, ThreatModel("l2", 1.0), eps=[0.5, 1.0], attacks="fast", sanity=False)
    for row in cross_check(stats, results):
        assert row["minimal_norm"] == accuracy_at(stats.norms, [row["eps"]])[0]
        assert row["consistent"] == (row["ensemble"] <= row["minimal_norm"])


def test_minimal_norm_statistics_refuses_bounded_attacks(digits_mlp, digits):
    _, _, x, y = digits
    with pytest.raises(ValueError, match="not a minimal-norm attack"):
        minimal_norm_statistics(digits_mlp, x[:4], y[:4], attack="pgd")


def _linear(d: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    w = torch.randn(d)
    model = nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([w / 2, -w / 2]))
        model.bias.zero_()
    return model, w


def test_random_vs_adversarial_ratio_is_about_sqrt_d_for_a_linear_classifier():
    d = 256
    model, w = _linear(d)
    x = (0.5 + 0.01 * torch.randn(16, d, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    y = model(x).argmax(1)
    adversarial = (x @ w).abs() / w.norm()  # exact L2 distance to the boundary w.x = 0
    result = noise_robustness(model, x, y, adversarial, norm="l2", directions=15,
                              bounds=(-100.0, 100.0), generator=torch.Generator().manual_seed(0))
    assert result.predicted_ratio == pytest.approx(math.sqrt(d))
    # |w.u| for a random unit u has median about 0.674 ||w|| / sqrt(d)
    assert 0.7 * math.sqrt(d) < result.median_ratio < 3.0 * math.sqrt(d)


def test_subspace_minimal_norm_scales_as_sqrt_d_over_m():
    d, m = 256, 16
    model, w = _linear(d)
    x = (0.5 + 0.01 * torch.randn(32, d, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    y = model(x).argmax(1)
    adversarial = (x @ w).abs() / w.norm()
    norms = subspace_minimal_norm(model, x, y, m, bounds=(-100.0, 100.0),
                                  generator=torch.Generator().manual_seed(0))
    ratio = (norms / adversarial).median().item()
    assert torch.isfinite(norms).all()
    assert 0.6 * math.sqrt(d / m) < ratio < 1.6 * math.sqrt(d / m)
