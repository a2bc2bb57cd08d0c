"""The sanity flags raised by ``evaluate`` itself, the verdict, and the ``thorough`` preset.

Each flag is provoked by a tiny model built to meet the flag's documented condition
(:data:`advlab.evaluation.FLAGS`) and shown silent on a healthy model.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.evaluation import AttackStep, EvaluationResult
from advlab.evaluation.presets import _apgd

N = 96


class NanGradient(nn.Module):
    """The identity in the forward pass; its input gradient is NaN (``0 * d sqrt(0)/dx = 0 * inf``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x * 0).sqrt()


class ConstantLogits(nn.Module):
    """Class 0 for every input (gradients exist but are zero): nothing can be broken, at any eps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10, dtype=x.dtype, device=x.device)
        logits[:, 0] = 5.0
        return logits + 0 * x.flatten(1).sum(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def points(digits):
    _, _, x_test, y_test = digits
    return x_test[:N], y_test[:N]


@pytest.fixture(scope="module")
def healthy(digits_mlp, points) -> list[EvaluationResult]:
    """A trained MLP, an eps sweep with every check on: the reference where no flag is raised."""
    x, y = points
    return evaluate(digits_mlp, x, y, ThreatModel("linf", 0.2), eps=[0.05, 0.2], attacks="fast")


def codes(result: EvaluationResult) -> list[str]:
    return [w["code"] for w in result.warnings]


def test_healthy_model_raises_no_flag_and_is_reliable(healthy):
    assert healthy[0].robust_accuracy > healthy[1].robust_accuracy  # the sweep does break points
    for result in healthy:
        assert codes(result) == []
        assert result.verdict == "reliable"


def test_nan_gradients_flag(digits_mlp, points, healthy):
    x, y = points
    model = nn.Sequential(NanGradient(), digits_mlp).eval()
    result = evaluate(model, x, y, ThreatModel("linf", 0.1), attacks="fast")
    assert "nan_gradients" in codes(result)
    assert result.clean_accuracy == healthy[0].clean_accuracy  # same forward pass
    assert all("nan_gradients" not in codes(r) for r in healthy)


def test_probabilities_flag(digits_mlp, points, healthy):
    x, y = points
    model = nn.Sequential(digits_mlp, nn.Softmax(dim=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # every attack warns about probabilities too
        result = evaluate(model, x, y, ThreatModel("linf", 0.1), attacks="fast")
    assert "probabilities" in codes(result)
    assert all("probabilities" not in codes(r) for r in healthy)


def test_large_eps_not_broken_flag(points, healthy):
    """A model that is right on every point and cannot be moved: at an eps that reaches the whole
    box, PGD still leaves every point correct."""
    x, _ = points
    y = torch.zeros(len(x), dtype=torch.int64)
    result = evaluate(ConstantLogits(), x, y, ThreatModel("linf", 0.1), attacks="fast")
    assert result.clean_accuracy == 1.0 and result.robust_accuracy == 1.0
    assert "large_eps_not_broken" in codes(result)
    assert all("large_eps_not_broken" not in codes(r) for r in healthy)


def _breaks_only_at_small_eps(limit: float):
    """An attack that gets worse with eps (as one whose step overshoots would): APGD below
    ``limit``, the unchanged inputs at or above it."""
    strong = _apgd(loss="ce", steps=20)

    def run(model, x, y, threat, generator=None):
        return strong(model, x, y, threat, generator=generator) if threat.eps < limit else x.clone()

    return run


def test_not_monotone_flag(digits_mlp, points, healthy):
    """The points broken at eps 0.05 survive the first attack at eps 0.2: the re-check of the
    sweep sees it. The pooled curve itself stays monotone."""
    x, y = points
    step = AttackStep("overshoot", _breaks_only_at_small_eps(0.1))
    results = evaluate(digits_mlp, x, y, ThreatModel("linf", 0.2), eps=[0.05, 0.2], attacks=[step])
    assert results[0].robust_accuracy < results[0].clean_accuracy
    assert results[1].per_attack["overshoot"]["breaks"] == 0
    assert results[1].robust_accuracy == results[0].robust_accuracy  # pooled, not re-broken
    assert all("not_monotone" in codes(r) for r in results)
    assert all("not_monotone" not in codes(r) for r in healthy)


def test_looks_like_probabilities():
    from advlab._predicates import looks_like_probabilities
    from advlab.evaluation.sanity import outputs_are_probabilities

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    assert looks_like_probabilities(logits.softmax(dim=1))
    assert not looks_like_probabilities(logits)
    assert not looks_like_probabilities(logits.abs())  # non-negative, rows do not sum to one
    assert not looks_like_probabilities(torch.zeros(0, 3))  # an empty batch says nothing
    assert outputs_are_probabilities is looks_like_probabilities  # the old name


def test_resolve_ensemble_keeps_its_old_name():
    from advlab.evaluation import resolve_ensemble, resolve_steps

    assert resolve_steps is resolve_ensemble
    assert [s.name for s in resolve_ensemble("standard", 3, "l1")] == ["apgd-ce", "apgd-dlr", "fab-t", "fmn", "square"]
    assert [s.name for s in resolve_ensemble("standard", 10, "l1")] == ["apgd-ce", "apgd-t", "fab-t", "fmn", "square"]


def _result_with(warnings_: list[dict[str, str]]) -> EvaluationResult:
    empty = torch.zeros(0, dtype=torch.bool)
    return EvaluationResult(norm="linf", eps=0.1, preset="fast", clean_accuracy=0.0,
                            robust_accuracy=0.0, clean_correct=empty, robust_correct=empty,
                            broken_by=[], distance=torch.zeros(0), per_attack={},
                            warnings=warnings_, time_s=0.0, seed=0, n=0, model_id="m",
                            data_id="d", version="0")


def test_verdict_lists_the_raised_flag_codes_in_order():
    assert _result_with([]).verdict == "reliable"
    flags = [{"code": "zero_gradients"}, {"code": "blackbox_stronger"}, {"code": "zero_gradients"}]
    assert _result_with(flags).verdict == "suspicious: zero_gradients, blackbox_stronger"


def test_verdict_survives_the_json_round_trip(digits_mlp, points):
    x, y = points
    model = nn.Sequential(NanGradient(), digits_mlp).eval()
    result = evaluate(model, x[:32], y[:32], ThreatModel("linf", 0.1), attacks="fast")
    assert result.verdict.startswith("suspicious: ") and "nan_gradients" in result.verdict
    assert EvaluationResult.from_dict(result.to_dict()).verdict == result.verdict


def test_thorough_preset_end_to_end(digits_mlp, points):
    """``thorough`` runs every attack of its list and is at least as strong as ``standard`` on
    the same points with the same seed."""
    x, y = points[0][:24], points[1][:24]
    threat = ThreatModel("linf", 0.1)
    standard = evaluate(digits_mlp, x, y, threat, attacks="standard", seed=0)
    thorough = evaluate(digits_mlp, x, y, threat, attacks="thorough", seed=0)
    assert thorough.preset == "thorough"
    assert list(thorough.per_attack) == ["apgd-ce", "apgd-t", "apgd-dlr", "fmn", "square"]
    assert thorough.clean_accuracy == standard.clean_accuracy
    assert 0 < thorough.robust_accuracy < thorough.clean_accuracy
    assert thorough.robust_accuracy <= standard.robust_accuracy
    assert not (thorough.robust_correct & ~thorough.clean_correct).any()
    robust_after_first = thorough.per_attack["apgd-ce"]["ran_on"] - thorough.per_attack["apgd-ce"]["breaks"]
    for name in ("apgd-t", "apgd-dlr", "fmn", "square"):  # each ran on the points still robust
        assert 0 < thorough.per_attack[name]["ran_on"] <= robust_after_first
    assert torch.all(threat.contains(x, thorough.x_adv))
