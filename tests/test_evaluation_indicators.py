"""Indicators of attack failure (Pintor et al. 2022) as flags: each provoked here, and silent on
the healthy model of ``test_evaluation_flags.py`` (which asserts that it raises no flag at all).
Unavailable gradients are provoked in ``test_evaluation_adaptive.py``, the unconstrained-attack
failure (``large_eps_not_broken``) in ``test_evaluation_flags.py``."""

from __future__ import annotations

import copy

import pytest
import torch
from harness import flag_codes
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.attacks import pgd
from advlab.evaluation import FLAGS, AttackStep
from advlab.evaluation.presets import _apgd

N = 64


@pytest.fixture(scope="module")
def points(digits):
    _, _, x, y = digits
    return x[:N], y[:N]


def test_new_flags_are_documented():
    for code in ("silent_success", "incomplete_optimization", "transfer_failure",
                 "unavailable_gradients", "large_eps_not_broken"):
        meaning, advice = FLAGS[code]
        assert meaning and advice


def test_silent_success_flag(digits_mlp, points):
    """An attack that finds adversarial points and then returns the clean inputs."""
    strong = _apgd(loss="ce", steps=20)

    def forgetful(model, x, y, threat, generator=None):
        strong(model, x, y, threat, generator=generator)
        return x.clone()

    result = evaluate(digits_mlp, *points, ThreatModel("linf", 0.2), attacks=[AttackStep("forgetful", forgetful)])
    assert "silent_success" in flag_codes(result)
    assert result.robust_accuracy == result.clean_accuracy


def test_incomplete_optimization_flag(digits_mlp, points):
    """Tiny steps: the loss still climbs steadily when the attack stops."""
    def timid(model, x, y, threat, generator=None):
        return pgd(model, x, y, threat, steps=15, step_size=threat.eps / 200, random_start=False)

    result = evaluate(digits_mlp, *points, ThreatModel("linf", 0.2), attacks=[AttackStep("timid", timid)])
    assert "incomplete_optimization" in flag_codes(result)


def test_transfer_failure_flag_and_silent_with_a_faithful_surrogate(digits_mlp, points):
    threat = ThreatModel("linf", 0.05)
    torch.manual_seed(7)  # an untrained MLP: its adversarial examples do not transfer
    stranger = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    result = evaluate(digits_mlp, *points, threat, attacks="fast", surrogate=stranger)
    assert "transfer_failure" in flag_codes(result)
    assert result.per_attack["transfer-apgd-ce"]["breaks"] < result.per_attack["transfer-apgd-ce"]["ran_on"]
    twin = copy.deepcopy(digits_mlp)
    faithful = evaluate(digits_mlp, *points, threat, attacks="fast", surrogate=twin)
    assert "transfer_failure" not in flag_codes(faithful)
    with torch.no_grad():  # the model and its twin are untouched by the evaluation
        assert torch.equal(twin(points[0]), digits_mlp(points[0]))


def test_report_shows_the_verdict_next_to_the_number():
    from advlab.report.build import _verdict

    assert _verdict({"warnings": []}) == "reliable"
    record = {"warnings": [{"code": "randomized"}], "draws": 11,
              "expected_accuracy": {"clean": [0.9, 0.85, 0.95], "robust": [0.5, 0.4, 0.6]}}
    assert _verdict(record) == "suspicious: randomized (expected over 11 draws 50.0% [40.0%, 60.0%])"
