"""Interval bound propagation: bounds checked against exact corner enumeration, certificates
against attacks (Gowal et al. 2018)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import apgd, pgd
from advlab.certify import certified_accuracy_ibp, ibp_bounds, ibp_certify
from advlab.models import create_model
from advlab.models.normalize import Normalize

TOL = 1e-5


def _corners(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """All ``2^d`` corners of the box of one input ``(1, ...)``: ``(2^d, ...)``."""
    d = lower[0].numel()
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))  # (2^d, d)
    lo, hi = lower.flatten(), upper.flatten()
    return (lo + bits * (hi - lo)).view(-1, *lower.shape[1:])


def _random_box(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand((1, *shape), generator=gen)
    width = 0.3 * torch.rand((1, *shape), generator=gen)
    return centre - width, centre + width


def _eval_bn(bn: nn.Module, channels: int, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    bn.running_mean.copy_(torch.randn(channels, generator=gen))
    bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    bn.weight.data.copy_(torch.randn(channels, generator=gen))  # negative scales too
    bn.bias.data.copy_(torch.randn(channels, generator=gen))
    return bn


def _tiny_nets() -> list[tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(Normalize([0.3], [0.4]), nn.Flatten(), nn.Linear(8, 12),
                        _eval_bn(nn.BatchNorm1d(12), 12, 1), nn.ReLU(),
                        nn.Sequential(nn.Linear(12, 7), nn.LeakyReLU(0.1), nn.Dropout(0.5)),
                        nn.Identity(), nn.Linear(7, 4))
    cnn = nn.Sequential(Normalize([0.5, 0.2], [0.3, 0.6]), nn.Conv2d(2, 4, 2, padding=1),
                        _eval_bn(nn.BatchNorm2d(4), 4, 2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 3, 1), nn.ReLU(), nn.AvgPool2d(1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    return [(mlp.eval(), (8,)), (cnn.eval(), (2, 2, 2))]


@pytest.mark.parametrize("index", [0, 1])
def test_bounds_contain_every_corner_and_interior_point(index):
    net, shape = _tiny_nets()[index]
    for seed in range(3):
        lower, upper = _random_box(shape, seed)
        low_logits, high_logits = ibp_bounds(net, lower, upper)
        corners = _corners(lower, upper)
        gen = torch.Generator().manual_seed(seed)
        inside = lower + torch.rand((200, *shape), generator=gen) * (upper - lower)
        with torch.no_grad():
            out = net(torch.cat([corners, inside]))
        assert low_logits.shape == high_logits.shape == (1, out.shape[1])
        assert bool((out >= low_logits - TOL).all() and (out <= high_logits + TOL).all())


def test_single_linear_layer_is_exact():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5)
    lower, upper = _random_box((6,), 0)
    low_logits, high_logits = ibp_bounds(layer, lower, upper)
    with torch.no_grad():
        out = layer(_corners(lower, upper))
    torch.testing.assert_close(low_logits[0], out.amin(dim=0), atol=1e-5, rtol=0)
    torch.testing.assert_close(high_logits[0], out.amax(dim=0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_zoo_models_with_normalize_are_supported(name):
    model = create_model(name, 10, (1, 8, 8), normalize=([0.5], [0.25]), seed=0).eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    low_logits, high_logits = ibp_bounds(model, (x - 0.01).clamp(0, 1), (x + 0.01).clamp(0, 1))
    with torch.no_grad():
        out = model(x)
    assert bool((low_logits <= out + TOL).all() and (out <= high_logits + TOL).all())
    assert bool(ibp_certify(model, x, out.argmax(1), 0.0).all())  # a point box is exact


def test_certificates_hold_against_pgd_and_apgd(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:200], y[:200]
    eps = 0.03
    certified = ibp_certify(digits_mlp, x, y, eps)
    assert int(certified.sum()) >= 10, "the test needs some certified points"
    threat = ThreatModel(norm="linf", eps=eps)
    gen = torch.Generator().manual_seed(0)
    for x_adv in (pgd(digits_mlp, x, y, threat, steps=20, random_start=True, generator=gen),
                  apgd(digits_mlp, x, y, threat, steps=20, generator=gen)):
        with torch.no_grad():
            robust = digits_mlp(x_adv).argmax(1) == y
        assert bool(robust[certified].all()), "a certified point was broken"
        assert certified.float().mean() <= robust.float().mean()
    result = certified_accuracy_ibp(digits_mlp, x, y, eps)
    assert result.accuracy == pytest.approx(certified.float().mean().item())
    assert result.low <= result.accuracy <= result.high and result.total == 200
    with torch.no_grad():
        clean = (digits_mlp(x).argmax(1) == y).float().mean().item()
    assert certified_accuracy_ibp(digits_mlp, x, y, 0.0).accuracy == pytest.approx(clean)


def test_no_elision_path_and_monotone_in_eps(digits, digits_cnn):
    _, _, x, y = digits
    x, y = x[:64], y[:64]
    net = nn.Sequential(digits_cnn, nn.Identity())  # last layer not Linear: interval logits
    small, large = ibp_certify(net, x, y, 0.002), ibp_certify(net, x, y, 0.02)
    assert bool((large <= small).all())
    elided = ibp_certify(digits_cnn, x, y, 0.002)
    assert bool((small <= elided).all()), "elision can only certify more"


def test_x_untouched_and_mode_restored(digits_mlp):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).train()
    x = torch.rand(4, 1, 8, 8)
    x_copy = x.clone()
    ibp_certify(model, x, torch.zeros(4, dtype=torch.int64), 0.05)
    assert torch.equal(x, x_copy) and model.training
    assert all(p.requires_grad for p in model.parameters())


def test_unsupported_layer_names_class_and_position():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 4), nn.GELU()), nn.Linear(4, 2))
    with pytest.raises(NotImplementedError, match=r"GELU at position '1\.1'.*supported layers"):
        ibp_bounds(model, torch.zeros(1, 4), torch.ones(1, 4))


def test_refusals():
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    with pytest.raises(ValueError, match="BatchNorm1d needs eval mode"):
        ibp_bounds(bn, torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="lower <= upper"):
        ibp_bounds(nn.Linear(3, 2), torch.ones(1, 3), torch.zeros(1, 3))
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="eps"):
        ibp_certify(model, torch.zeros(1, 3), torch.zeros(1, dtype=torch.int64), -0.1)
    with pytest.raises(ValueError, match="labels out of range"):
        ibp_certify(model, torch.zeros(1, 3), torch.tensor([5]), 0.1)
    with pytest.raises(ValueError, match="outside the bounds"):
        ibp_certify(model, torch.full((1, 3), 2.0), torch.zeros(1, dtype=torch.int64), 0.1)
