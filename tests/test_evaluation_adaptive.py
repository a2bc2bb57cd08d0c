"""BPDA by straight-through backward passes and by a surrogate, and the transfer step (issue 15,
item 3; Athalye, Carlini & Wagner 2018)."""

from __future__ import annotations

import pytest
import torch
from harness import flag_codes
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.attacks import apgd
from advlab.attacks.bpda import StraightThrough, bpda

N = 96


class Quantize(nn.Module):
    """Rounds the input to ``levels`` grey levels (zero input gradient)."""

    def __init__(self, levels: int = 8) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class Binarize(nn.Module):
    """A ``sign`` inside: the input binarised at 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sign(x - 0.5) + 1) / 2


class Threshold(nn.Module):
    """A hard threshold cast to float, next to a smooth path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x > 0.5).float() + 0.5 * x


@pytest.fixture(scope="module")
def points(digits):
    _, _, x, y = digits
    return x[:N], y[:N]


def test_straight_through_forward_is_exact_and_has_gradients():
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    for layer in (Quantize(), Binarize(), Threshold()):
        wrapped = StraightThrough(layer)
        assert torch.equal(wrapped(x), layer(x))
        grad, = torch.autograd.grad(wrapped(x).sum(), x)
        assert grad.abs().sum() > 0
    plain, = torch.autograd.grad(Quantize()(x).sum(), x, allow_unused=True, materialize_grads=True)
    assert plain.abs().sum() == 0


@pytest.mark.parametrize("layer", [Quantize(8), Binarize()], ids=["quantised", "sign"])
def test_straight_through_breaks_points_plain_apgd_cannot(digits_mlp, points, layer):
    x, y = points
    model = nn.Sequential(layer, digits_mlp).eval()
    threat = ThreatModel("linf", 0.3 if isinstance(layer, Binarize) else 0.15)
    plain = evaluate(model, x, y, threat, attacks="fast", bpda=False)
    auto = evaluate(model, x, y, threat, attacks="fast")  # shattered gradients: BPDA on its own
    assert plain.robust_accuracy > plain.clean_accuracy - 0.1  # only its random start moves
    assert auto.robust_accuracy < plain.robust_accuracy - 0.25
    assert auto.per_attack["bpda-apgd-ce"]["breaks"] > 0
    assert "unavailable_gradients" in flag_codes(auto) and "unavailable_gradients" not in flag_codes(plain)
    # every counted example is a real one: verified on the exact model
    wrong = model(auto.x_adv).argmax(dim=1) != y
    assert torch.equal(~auto.robust_correct & auto.clean_correct, wrong & auto.clean_correct)


def test_surrogate_backward_and_transfer_step(digits_mlp, points):
    x, y = points
    model = nn.Sequential(Quantize(8), digits_mlp).eval()
    threat = ThreatModel("linf", 0.15)
    result = evaluate(model, x, y, threat, attacks="fast", bpda=False, surrogate=digits_mlp)
    assert {"surrogate-apgd-ce", "transfer-apgd-ce"} <= set(result.per_attack)
    assert result.robust_accuracy < result.clean_accuracy - 0.25
    with pytest.raises(TypeError, match="surrogate must be an nn.Module"):
        evaluate(model, x, y, threat, attacks="fast", surrogate=lambda t: t)


def test_bpda_by_hand_with_an_attack(digits_mlp, points):
    x, y = points
    model = nn.Sequential(Quantize(8), digits_mlp).eval()
    threat = ThreatModel("linf", 0.15)
    plain = apgd(model, x, y, threat, steps=20)
    by_hand = apgd(bpda(model), x, y, threat, steps=20)
    with torch.no_grad():
        assert (model(by_hand).argmax(1) != y).sum() > (model(plain).argmax(1) != y).sum() + 20
    with pytest.raises(TypeError, match="surrogate must be an nn.Module"):
        bpda(model, surrogate="smooth")
