"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): the radius against the closed form of a
linear classifier, the statistics against scipy, and certificates against an attack on digits."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pytest
import torch
from torch import nn

from advlab import ThreatModel, stats
from advlab.attacks import pgd
from advlab.certify import (
    ABSTAIN,
    certified_accuracy,
    certified_accuracy_table,
    smooth_certify,
    smooth_predict,
)

D = 10


class TwoSided(nn.Module):
    """Logits ``(w.x + b, -(w.x + b))`` of a linear binary classifier on ``(B, D)`` inputs."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.linear = nn.Linear(len(w), 1)
        self.linear.weight.data.copy_(w[None])
        self.linear.bias.data.fill_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.cat([z, -z], dim=1)


@pytest.fixture(scope="module")
def linear() -> tuple[TwoSided, torch.Tensor]:
    """A unit-norm linear classifier whose boundary passes through the centre of the cube."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=gen)
    w = w / w.norm()
    return TwoSided(w, -0.5 * w.sum().item()).eval(), w


def _distance(model: TwoSided, x: torch.Tensor) -> torch.Tensor:
    """Exact L2 distance to the boundary, ``|w.x + b| / ||w||`` (the true smoothed radius)."""
    with torch.no_grad():
        return model(x)[:, 0].abs() / model.linear.weight.norm()


def test_radius_never_exceeds_the_closed_form_and_approaches_it(linear):
    model, _ = linear
    sigma, alpha = 0.25, 0.001
    x = torch.rand(100, D, generator=torch.Generator().manual_seed(1))
    cert = smooth_certify(model, x, sigma=sigma, n=10_000, alpha=alpha, batch_size=20_000,
                          generator=torch.Generator().manual_seed(2))
    exact = _distance(model, x)
    truth = (model(x)[:, 0] < 0).long()  # class 1 where w.x + b < 0
    certified = cert.prediction != ABSTAIN
    assert bool((cert.prediction[certified] == truth[certified]).all())
    violations = int((cert.radius > exact + 1e-4).sum())
    assert violations <= 1, f"{violations} radii exceed the closed form (expected ~alpha * 100)"
    # Closed form of the smoothed probability: p_A = Phi(|w.x + b| / (sigma ||w||)).
    p_a = torch.tensor([NormalDist().cdf(r / sigma) for r in exact.tolist()])
    assert int((cert.p_lower.float() > p_a + 1e-4).sum()) <= 1
    mid = (exact > 0.5 * sigma) & (exact < 2 * sigma)
    ratio = cert.radius[mid] / exact[mid]
    assert mid.sum() >= 20 and ratio.mean() > 0.85 and ratio.min() > 0.7


def test_abstains_on_the_boundary(linear):
    model, w = linear
    v = 0.2 * torch.rand(20, D, generator=torch.Generator().manual_seed(3)) - 0.1
    x = 0.5 + v - (v @ w)[:, None] * w  # on the hyperplane: p_A = 1/2
    gen = torch.Generator().manual_seed(4)
    cert = smooth_certify(model, x, sigma=0.25, n0=100, n=2000, generator=gen)
    assert bool((cert.prediction == ABSTAIN).all() and (cert.radius == 0).all())
    assert int((smooth_predict(model, x, sigma=0.25, n=1000, generator=gen) == ABSTAIN).sum()) >= 19
    far = torch.cat([x[:5] + 0.45 * w, x[:5] - 0.45 * w]).clamp(0, 1)
    predicted = smooth_predict(model, far, sigma=0.1, n=500, generator=gen)
    with torch.no_grad():
        assert torch.equal(predicted, model(far).argmax(1))


def test_clopper_pearson_and_binomial_test_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n, alpha in [(0, 10, 0.05), (1, 1, 0.001), (7, 10, 0.001), (500, 1000, 0.025),
                        (1000, 1000, 0.001), (99_990, 100_000, 0.001), (61_234, 100_000, 0.001)]:
        expected = 0.0 if k == 0 else scipy_stats.beta.ppf(alpha, k, n - k + 1)
        assert stats.clopper_pearson_lower(k, n, alpha, backend="torch") == pytest.approx(
            expected, abs=1e-10)
        upper = 1.0 if k == n else scipy_stats.beta.ppf(1 - alpha, k + 1, n - k)
        assert stats.clopper_pearson_upper(k, n, alpha, backend="torch") == pytest.approx(
            upper, abs=1e-10)
    for k, n in [(0, 1), (5, 10), (60, 100), (38, 100), (900, 1000), (3, 3)]:
        assert stats.binomial_test_half(k, n, backend="torch") == pytest.approx(
            scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-12)


def test_statistics_without_scipy_are_sane(monkeypatch, linear):
    monkeypatch.setattr(stats, "_scipy_stats", lambda: None)
    with pytest.raises(ImportError, match="needs scipy"):
        stats.clopper_pearson_lower(1, 2, 0.1, backend="scipy")
    model, _ = linear
    cert = smooth_certify(model, torch.rand(3, D), sigma=0.25, n=200,
                          generator=torch.Generator().manual_seed(0))
    for p_lower, counts, c in zip(cert.p_lower.tolist(), cert.counts, cert.prediction.tolist()):
        if c != ABSTAIN:  # the fallback gave the bound
            assert p_lower == stats.clopper_pearson_lower(int(counts[c]), 200, 0.001, backend="torch")
    low, high = stats.clopper_pearson_interval(30, 100, backend="torch")
    assert 0.2 < low < 0.3 < high < 0.41
    assert stats.clopper_pearson_lower(100, 100, 0.001, backend="torch") == pytest.approx(
        0.001 ** (1 / 100), abs=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        stats.clopper_pearson_lower(1, 2, 1.5)
    with pytest.raises(ValueError, match="backend"):
        stats.clopper_pearson_lower(1, 2, 0.1, backend="numpy")


def test_reproducible_x_untouched_mode_restored(linear):
    model, _ = linear
    wrapped = nn.Sequential(model, nn.Dropout(0.5)).train()
    x = torch.rand(6, D, generator=torch.Generator().manual_seed(5))
    x_copy = x.clone()
    run = [smooth_certify(wrapped, x, sigma=0.5, n=300, batch_size=128,
                          generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(run[0].counts, run[1].counts) and torch.equal(run[0].radius, run[1].radius)
    assert not torch.equal(run[0].counts, run[2].counts)
    assert torch.equal(x, x_copy) and wrapped.training and model.training
    assert all(p.requires_grad for p in wrapped.parameters())
    first = smooth_predict(wrapped, x, sigma=0.5, n=200, generator=torch.Generator().manual_seed(0))
    again = smooth_predict(wrapped, x, sigma=0.5, n=200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and first.dtype == torch.int64


def test_result_table_repr_and_dict(linear):
    model, _ = linear
    x = torch.rand(30, D, generator=torch.Generator().manual_seed(6))
    cert = smooth_certify(model, x, sigma=0.25, n=500, generator=torch.Generator().manual_seed(7))
    y = (model(x)[:, 0] < 0).long()
    assert cert.counts.shape == (30, 2) and bool((cert.counts.sum(1) == 500).all())
    assert "\n" not in repr(cert) and repr(cert).startswith("SmoothingCertificate(B=30")
    json.dumps(cert.to_dict())
    acc = certified_accuracy(cert, y, [0.0, 0.25, 0.5])
    assert list(acc) == [0.0, 0.25, 0.5] and acc[0.0] >= acc[0.25] >= acc[0.5]
    assert acc == cert.certified_accuracy(y, [0.0, 0.25, 0.5])
    rows = certified_accuracy_table(cert, y)
    assert rows[0].radius == 0.0 and rows[1].radius == 0.25
    assert all(r.low <= r.accuracy <= r.high for r in rows)
    assert rows[1].accuracy == pytest.approx(acc[0.25]) and rows[1].total == 30


def test_clear_errors(linear):
    model, _ = linear
    x = torch.rand(2, D)
    for kwargs, match in [({"sigma": 0.0}, "sigma"), ({"sigma": 0.1, "n": 0}, "n must"),
                          ({"sigma": 0.1, "n0": 0}, "n0 must"), ({"sigma": 0.1, "alpha": 1.0}, "alpha")]:
        with pytest.raises(ValueError, match=match):
            smooth_certify(model, x, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        smooth_predict(model, torch.full((2, D), math.nan), sigma=0.1)
    with pytest.raises(ValueError, match="outside the bounds"):
        smooth_certify(model, x + 2, sigma=0.1)
    with pytest.raises(ValueError, match="batch-first"):
        smooth_predict(model, torch.rand(D), sigma=0.1)
    softmax = nn.Sequential(model, nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="probabilities"):
        smooth_predict(softmax, x, sigma=0.1, n=10)


class NoisyEnsemble(nn.Module):
    """Expectation over transformation (Athalye et al. 2018) of the smoothed classifier: the
    log of the base model's softmax averaged over ``draws`` fresh Gaussian draws per call."""

    def __init__(self, base: nn.Module, sigma: float, draws: int, seed: int) -> None:
        super().__init__()
        self.base, self.sigma, self.draws = base, sigma, draws
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn((self.draws, *x.shape), generator=self.generator) * self.sigma
        logits = self.base((x[None] + noise).flatten(0, 1)).view(self.draws, len(x), -1)
        return torch.logsumexp(logits.log_softmax(-1), dim=0) - math.log(self.draws)


def _noise_trained_cnn(digits, sigma: float) -> nn.Module:
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            noisy = x[idx] + sigma * torch.randn(x[idx].shape, generator=gen)
            loss = nn.functional.cross_entropy(model(noisy), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_certified_points_survive_an_eot_attack_on_the_smoothed_classifier(digits):
    sigma, radius = 0.25, 0.25
    model = _noise_trained_cnn(digits, sigma)
    _, _, x, y = digits
    x, y = x[:16], y[:16]
    cert = smooth_certify(model, x, sigma=sigma, n0=50, n=2000, alpha=0.001,
                          generator=torch.Generator().manual_seed(0))
    certified = (cert.prediction == y) & (cert.radius > radius)
    assert int(certified.sum()) >= 4, f"too few certified points: {cert}"
    x_adv = pgd(NoisyEnsemble(model, sigma, draws=16, seed=1), x, y,
                ThreatModel(norm="l2", eps=radius), steps=20, step_size=2.5 * radius / 20,
                generator=torch.Generator().manual_seed(2))
    verified = smooth_predict(model, x_adv, sigma=sigma, n=2000, alpha=0.001,
                              generator=torch.Generator().manual_seed(3))
    broken = (verified != y) & (verified != ABSTAIN)
    assert not bool(broken[certified].any()), "a point certified at radius > r broke within r"
    assert certified_accuracy(cert, y, [radius])[radius] <= (verified == y).float().mean().item()
