"""Randomised models: every prediction is a majority vote over seeded draws (issue 15, item 1).

A digits MLP behind Gaussian input noise (sigma 0.2): with a single draw per decision, points
that nothing can move would be "broken" by lucky draws; with the vote and common random numbers
robust accuracy equals clean accuracy at eps -> 0.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.evaluation.draws import Judge, mean_interval


class GaussianInput(nn.Module):
    def __init__(self, sigma: float = 0.2) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.sigma * torch.randn_like(x)).clamp(0.0, 1.0)


def _noisy(model: nn.Module) -> nn.Module:
    return nn.Sequential(GaussianInput(), model).eval()


def test_eps_zero_robust_equals_clean_on_a_randomised_model(digits_mlp, digits):
    _, _, x, y = digits
    model = _noisy(digits_mlp)
    results = evaluate(model, x[:64], y[:64], ThreatModel("linf", 0.0), eps=[0.0, 1e-4],
                       attacks="standard")
    for r in results:
        assert "randomized" in [w["code"] for w in r.warnings]
        assert r.robust_accuracy == r.clean_accuracy
        assert r.draws == 11
        mean, low, high = r.expected_accuracy["clean"]
        assert low <= mean <= high and 0.5 < mean < 1.0  # the noise costs some accuracy


def test_vote_breaks_points_at_a_real_eps_and_reports_the_interval(digits_mlp, digits):
    _, _, x, y = digits
    model = _noisy(digits_mlp)
    result = evaluate(model, x[:48], y[:48], ThreatModel("linf", 0.2), attacks="fast", eot_samples=4)
    assert result.robust_accuracy < result.clean_accuracy - 0.2
    mean, low, high = result.expected_accuracy["robust"]
    assert low <= mean <= high
    assert mean < result.expected_accuracy["clean"][0]
    assert "expected" in result.summary()


def test_judge_common_random_numbers(digits_mlp, digits):
    _, _, x, y = digits
    x, y = x[:40], y[:40]
    model = _noisy(digits_mlp)
    judge = Judge(model, x, draws=9, seed=3, batch_size=16)
    first, again = judge.counts(x), judge.counts(x)
    assert torch.equal(first, again) and int(first.sum()) == 9 * len(x)  # same seed, same votes
    index = torch.tensor([1, 5, 7])
    assert not judge.wrong(index, x[index], y[index]).any()  # the clean inputs never count
    state = torch.get_rng_state()
    judge.counts(x)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is restored
    deterministic = Judge(digits_mlp, x)
    correct, share = deterministic.clean(digits_mlp(x), y)
    assert torch.equal(share, correct.float())


def test_mean_interval():
    mean, low, high = mean_interval(torch.tensor([0.0, 1.0, 0.5, 0.5]))
    assert mean == 0.5 and 0.0 <= low < 0.5 < high <= 1.0
    assert mean_interval(torch.ones(5)) == (1.0, 1.0, 1.0)
