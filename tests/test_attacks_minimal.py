"""Minimal-norm attacks (DeepFool, C&W L2, FMN) and universal perturbations.

Closed-form checks on linear models, then quality checks on the trained digits models: every
attack succeeds, returns consistent norms, stays in the bounds, and the optimisation attacks
(C&W, FMN) are at least as strong as DeepFool.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from advlab.attacks import AttackInputError, cw, deepfool, fmn, universal
from advlab.attacks.deepfool import rho_adv
from advlab.attacks.universal import UniversalResult
from advlab.threat import ThreatModel

WIDE = (-100.0, 100.0)
SLACK = 1e-4  # DeepFool adds this to every step length (authors' reference code)


class BinaryLinear(nn.Module):
    """f(x) = w.x + b as the two logits [-f/2, f/2] (class 1 iff f > 0)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1) @ self.w + self.b
        return torch.stack([-f / 2, f / 2], dim=1)


@pytest.fixture(scope="module")
def binary_case():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, generator=gen)
    model = BinaryLinear(w, 0.3)
    x = torch.randn(16, 6, generator=gen)
    with torch.no_grad():
        f = x @ w + 0.3
    return model, x, (f > 0).long(), f.abs()


@pytest.mark.parametrize("norm, dual", [("l2", 2), ("linf", 1)])
def test_deepfool_binary_linear_closed_form(binary_case, norm, dual):
    model, x, y, margin = binary_case
    result = deepfool(model, x, y, norm=norm, bounds=WIDE, return_info=True)
    expected = 1.02 * (margin / torch.linalg.vector_norm(model.w.detach(), ord=dual) + SLACK)
    assert result.success.all()
    assert (result.extras["steps"] == 1).all()
    torch.testing.assert_close(result.norm, expected, rtol=1e-4, atol=1e-5)


def _brute_force_min_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smallest misclassified radius around each 2-D point, on a dense polar grid."""
    radii = torch.linspace(0, 3, 3001)
    angles = torch.linspace(0, 2 * math.pi, 1441)[:-1]
    ring = torch.stack([angles.cos(), angles.sin()], dim=1)  # (A, 2)
    out = []
    for point, label in zip(x, y):
        grid = point + radii[:, None, None] * ring[None]  # (R, A, 2)
        with torch.no_grad():
            wrong = (model(grid.reshape(-1, 2)).argmax(dim=1) != label).reshape(len(radii), -1)
        out.append(radii[wrong.any(dim=1)].min())
    return torch.stack(out)


def test_deepfool_multiclass_linear_matches_exact_distance():
    torch.manual_seed(0)
    model = nn.Linear(2, 5)
    x = torch.randn(12, 2)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(dim=1)
    # the misclassified set is a union of half-spaces, so the exact distance is the nearest one
    weights = model.weight.detach()
    diff_w = weights[None] - weights[y][:, None]  # (B, K, 2)
    diff_f = (logits - logits.gather(1, y[:, None])).abs()  # (B, K)
    ratio = diff_f / diff_w.norm(dim=2).clamp_min(1e-12)
    exact = ratio.masked_fill(torch.nn.functional.one_hot(y, 5).bool(), math.inf).amin(dim=1)
    result = deepfool(model, x, y, bounds=WIDE, return_info=True)
    assert result.success.all() and (result.extras["steps"] == 1).all()
    torch.testing.assert_close(result.norm, 1.02 * (exact + SLACK), rtol=1e-4, atol=1e-5)
    brute = _brute_force_min_l2(model, x[:4], y[:4])
    assert ((result.norm[:4] >= brute - 2e-3) & (result.norm[:4] <= 1.02 * brute + 2e-3)).all()


@pytest.fixture(scope="module")
def digits_batch(digits):
    _, _, x_test, y_test = digits
    return x_test[:48], y_test[:48]


def _check_minimal(result, model, x, y, norm="l2"):
    """Invariants of a minimal-norm AttackResult: norms, bounds, misclassification, x_adv == x on failure."""
    diff = (result.x_adv - x).flatten(1)
    ord_ = math.inf if norm == "linf" else 2
    ok = result.success
    torch.testing.assert_close(result.norm[ok], torch.linalg.vector_norm(diff[ok], ord=ord_, dim=1))
    assert torch.isinf(result.norm[~ok]).all() and (diff[~ok] == 0).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        assert (model(result.x_adv[ok]).argmax(dim=1) != y[ok]).all()
    assert ok.float().mean() >= 0.97


@pytest.mark.parametrize("model_name", ["digits_mlp", "digits_cnn"])
def test_minimal_attacks_on_digits(request, digits_batch, model_name):
    model = request.getfixturevalue(model_name)
    x, y = digits_batch
    x_before = x.clone()
    reference = deepfool(model, x, y, return_info=True)
    _check_minimal(reference, model, x, y)
    df_median = reference.norm.median()
    assert 0.1 < df_median < 1.5  # 8x8 digits in [0, 1]: a few pixels' worth
    for attack, slack in ((cw, 1.0), (fmn, 1.05)):
        result = attack(model, x, y, return_info=True)
        _check_minimal(result, model, x, y)
        assert result.norm.median() <= slack * df_median, attack.__name__
        # per sample too: DeepFool is close to optimal on these small ReLU nets, so "no worse"
        ratio = (result.norm / reference.norm)[reference.norm > 0]
        assert ratio.median() <= 1.0 + 1e-3, attack.__name__
    assert torch.equal(x, x_before) and not model.training


def test_linf_minimal_attacks(digits_cnn, digits_batch):
    x, y = digits_batch
    reference = deepfool(digits_cnn, x, y, norm="linf", return_info=True)
    _check_minimal(reference, digits_cnn, x, y, norm="linf")
    result = fmn(digits_cnn, x, y, norm="linf", return_info=True)
    _check_minimal(result, digits_cnn, x, y, norm="linf")
    assert result.norm.median() <= 1.05 * reference.norm.median()


def test_cw_targeted_and_plain_return(digits_mlp, digits_batch):
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    with torch.no_grad():
        target = digits_mlp(x).argsort(dim=1, descending=True)[:, 1]  # runner-up class
    y_before = y.clone()
    result = cw(digits_mlp, x, y, target=target, steps=100, binary_steps=4, return_info=True)
    assert result.success.all() and torch.equal(y, y_before)
    with torch.no_grad():
        assert (digits_mlp(result.x_adv).argmax(dim=1) == target).all()
    assert torch.isfinite(result.norm).all() and (result.norm > 0).all()
    plain = deepfool(digits_mlp, x, y)
    assert isinstance(plain, torch.Tensor) and plain.shape == x.shape


def test_misclassified_points_get_zero_perturbation(tiny_model):
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wrong = (tiny_model(x).argmax(dim=1) + 1) % 5
    for attack in (deepfool, fmn, partial(cw, steps=5, binary_steps=1)):
        result = attack(tiny_model, x, wrong, return_info=True)
        assert result.success.all() and (result.norm == 0).all()
        assert torch.equal(result.x_adv, x)


def test_rho_adv_formula():
    x = torch.full((3, 4), 0.5)  # ||x||_2 = 1
    x_adv = x.clone()
    x_adv[0, 0] += 0.1
    x_adv[1, :] += 0.15  # ||r|| = 0.3
    assert rho_adv(x, x_adv) == pytest.approx(0.2)  # sample 2 unchanged = failed, left out
    assert rho_adv(x, x_adv, success=torch.tensor([True, True, True])) == pytest.approx(0.4 / 3)
    assert rho_adv(x, x_adv, norm="linf") == pytest.approx((0.2 + 0.3) / 2)
    assert math.isnan(rho_adv(x, x))


def _random_sign_fooling(model, x, eps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = (torch.randint(0, 2, x.shape[1:], generator=gen).float() * 2 - 1) * eps
    with torch.no_grad():
        return (model((x + v).clamp(0, 1)).argmax(1) != model(x).argmax(1)).float().mean().item()


def test_universal_perturbation_beats_random(digits_cnn, digits):
    x_train, y_train, x_test, y_test = digits
    threat = ThreatModel("linf", eps=0.15)
    result = universal(digits_cnn, x_train[:600], y_train[:600], threat, max_passes=4,
                       x_val=x_test, y_val=y_test, generator=torch.Generator().manual_seed(0),
                       return_info=True)
    assert isinstance(result, UniversalResult)
    v = result.perturbation
    assert v.shape == x_train.shape[1:] and v.abs().max() <= 0.15 + 1e-6
    assert 1 <= result.passes <= 4 and len(result.history) == result.passes
    baseline = _random_sign_fooling(digits_cnn, x_test, 0.15)
    assert result.fooling_rate_val is not None and result.error_rate_val is not None
    assert result.fooling_rate_val > baseline + 0.08
    assert result.fooling_rate >= max(result.history) - 1e-6
    again = universal(digits_cnn, x_train[:600], y_train[:600], threat, max_passes=4,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, v)


def test_universal_l2_ball_and_early_stop(digits_mlp, digits):
    x_train, y_train, _, _ = digits
    threat = ThreatModel("l2", eps=0.5)
    result = universal(digits_mlp, x_train[:128], y_train[:128], threat, delta=1.0,
                       return_info=True)  # delta = 1: stop after the first pass
    assert result.passes == 1 and result.fooling_rate_val is None
    assert torch.linalg.vector_norm(result.perturbation) <= 0.5 + 1e-5


def test_bad_input(tiny_model):
    x = torch.rand(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown norm"):
        deepfool(tiny_model, x, y, norm="l3")
    with pytest.raises(ValueError, match="deepfool supports"):
        deepfool(tiny_model, x, y, norm="l1")
    with pytest.raises(ValueError, match="cw supports"):
        cw(tiny_model, x, y, norm="linf")
    with pytest.raises(ValueError, match="steps"):
        fmn(tiny_model, x, y, steps=0)
    with pytest.raises(ValueError, match="n_target_classes"):
        deepfool(tiny_model, x, y, n_target_classes=1)
    with pytest.raises(ValueError, match="step_size_init"):
        fmn(tiny_model, x, y, step_size_init=0.0)
    with pytest.raises(ValueError, match="c must be"):
        cw(tiny_model, x, y, c=-1.0)
    with pytest.raises(AttackInputError, match="outside the bounds"):
        fmn(tiny_model, x + 2, y)
    with pytest.raises(ValueError, match="universal supports"):
        universal(tiny_model, x, y, ThreatModel("l1", eps=1.0))
