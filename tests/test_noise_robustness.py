"""Random-noise robustness (advlab.evaluation.noise): the minimal random perturbation that flips
a prediction, DeepFool in random subspaces, and their ratio to the adversarial distance against
sqrt(d / m) (Fawzi, Moosavi-Dezfooli & Frossard 2016); the old import paths still work."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import advlab.evaluation.noise as noise_module
from advlab.evaluation.noise import minimal_noise_norm, noise_robustness, subspace_minimal_norm


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear_binary(d: int, n: int, distance: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor,
                                                            torch.Tensor, torch.Tensor]:
    """A linear 2-class model on (n, d) points at L2 distance ``distance`` from its boundary."""
    torch.manual_seed(0)
    model = nn.Linear(d, 2)
    w = (model.weight[1] - model.weight[0]).detach()
    b = (model.bias[1] - model.bias[0]).detach()
    x = 0.4 + 0.2 * torch.rand(n, d, generator=_gen())
    f = x @ w + b
    x = x - ((f - f.sign() * distance * w.norm()) / w.norm() ** 2)[:, None] * w
    f = x @ w + b
    return model, x, (f > 0).long(), w, f


def test_minimal_noise_norm_matches_the_linear_formula(monkeypatch):
    model, x, y, w, f = _linear_binary(d=50, n=6, distance=0.02)
    u = torch.randn(4, 50, generator=_gen(1))
    result = minimal_noise_norm(model, x, y, directions=u, max_norm=4.0)
    unit = u / u.norm(dim=1, keepdim=True)
    expected = f.abs()[:, None] / (unit @ w).abs()[None]  # |w.x + b| / |w.u|, both rays
    assert torch.allclose(result.extras["direction_norms"], expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(result.norms, expected.min(dim=1).values, rtol=1e-4, atol=1e-5)
    assert bool(result.success.all())
    assert bool((model(result.x_adv).argmax(dim=1) != y).all())
    # the same computation (same shapes) is bit-for-bit reproducible
    again = minimal_noise_norm(model, x, y, directions=u, max_norm=4.0)
    assert torch.equal(again.norms, result.norms) and torch.equal(again.x_adv, result.x_adv)
    # processing the samples in chunks (large inputs) gives the same decisions and the same norms
    # up to round-off: other shapes may take other BLAS kernels, which round differently
    monkeypatch.setattr(noise_module, "CHUNK_ELEMENTS", 1)
    chunked = minimal_noise_norm(model, x, y, directions=u, max_norm=4.0)
    assert torch.equal(chunked.success, result.success)
    # the examples sit on the boundary (logits tied to round-off): compare logits, not argmax
    torch.testing.assert_close(model(chunked.x_adv), model(result.x_adv), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked.norms, result.norms, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.x_adv, result.x_adv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.extras["direction_norms"], result.extras["direction_norms"],
                               rtol=1e-5, atol=1e-6)


def test_random_to_adversarial_ratio_is_about_sqrt_d():
    d = 100
    model, x, y, w, f = _linear_binary(d=d, n=60, distance=0.02)
    adversarial = f.abs() / w.norm()  # exact minimal L2 perturbation of a linear model
    result = minimal_noise_norm(model, x, y, directions=40, max_norm=5.0, generator=_gen())
    ratio = result.extras["direction_norms"] / adversarial[:, None]
    # one random direction: ||w|| / |w.u| ~ sqrt(d) / |N(0,1)|, median 1.48 sqrt(d)
    assert 1.0 < ratio.median().item() / math.sqrt(d) < 2.2
    # a random m-dim subspace: ||w|| / ||P_S w|| ~ sqrt(d/m) (Fawzi et al. 2016)
    m = 4
    sub = minimal_noise_norm(model, x, y, directions=100, subspace_dim=m, max_norm=5.0, generator=_gen())
    assert 0.7 < (sub.norms / adversarial).median().item() / math.sqrt(d / m) < 1.7
    with pytest.raises(ValueError, match="subspace_dim"):
        minimal_noise_norm(model, x, y, subspace_dim=d + 1)


def test_minimal_noise_norm_edge_cases(tiny_model):
    x = torch.rand(5, 1, 4, 4, generator=_gen())
    logits = tiny_model(x)
    y = logits.argmax(dim=1)
    y[0] = (y[0] + 1) % 5  # misclassified to begin with: norm 0
    result = minimal_noise_norm(tiny_model, x, y, directions=3, max_norm=1e-6, generator=_gen())
    assert result.norms[0] == 0 and torch.equal(result.x_adv[0], x[0])
    assert bool(torch.isinf(result.norms[1:]).all()) and not bool(result.success[1:].any())
    assert torch.equal(result.x_adv[1:], x[1:])
    with pytest.raises(ValueError, match="directions"):
        minimal_noise_norm(tiny_model, x, y, directions=0)


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


def test_the_noise_measurements_live_in_one_module():
    import advlab.attacks
    import advlab.evaluation.minimal as minimal

    assert not hasattr(advlab.attacks, "minimal_noise_norm")  # moved in 0.2 (README, changes)
    assert minimal.noise_robustness is noise_robustness
    assert minimal.subspace_minimal_norm is subspace_minimal_norm
    assert minimal.NoiseRobustness is noise_module.NoiseRobustness


def test_attacks_do_not_import_evaluation():
    code = ("import sys, advlab.attacks; "
            "assert not any(m.startswith('advlab.evaluation') for m in sys.modules), 'evaluation imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
