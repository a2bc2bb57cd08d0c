"""Minimal-norm statistics and the accuracy curve they imply (random noise: test_noise_robustness)."""

from __future__ import annotations

import pytest
import torch

from advlab import ThreatModel, evaluate
from advlab.evaluation.minimal import accuracy_at, cross_check, minimal_norm_statistics


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
