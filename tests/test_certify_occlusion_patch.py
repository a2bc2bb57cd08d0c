"""Occlusion and patch attacks, PatchThreat / MaskThreat and mask-constrained PGD on digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advlab.attacks import (
    ATTACKS,
    MaskThreat,
    PatchThreat,
    eyeglass_mask,
    masked_pgd,
    occlusion,
    occlusion_accuracy,
    patch,
)
from advlab.attacks.occlusion import grid_positions, paste


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_with_kind_patch():
    assert ATTACKS.metadata("occlusion")["kind"] == ATTACKS.metadata("patch")["kind"] == "patch"


def test_grid_positions_reach_the_far_edges():
    corners = grid_positions(8, 8, 3, 2)
    assert corners[:, 0].unique().tolist() == [0, 2, 4, 5]
    assert len(grid_positions(8, 8, 3, 1)) == 36


def test_occlusion_matches_brute_force(digits, digits_cnn):
    _, _, x_test, y_test = digits
    x, y = x_test[:12], y_test[:12]
    x_before = x.clone()
    info = occlusion(digits_cnn, x, y, size=3, fill="grey", return_info=True, batch_size=50)
    assert torch.equal(x, x_before)
    corners = grid_positions(8, 8, 3, 1)
    grey = torch.full((len(corners), 1, 3, 3), 0.5)
    with torch.no_grad():
        clean_wrong = digits_cnn(x).argmax(1) != y
        for i in range(len(x)):
            if clean_wrong[i]:
                assert info.extras["top"][i] == -1 and torch.equal(info.x_adv[i], x[i])
                continue
            images = paste(x[i:i + 1].expand(len(corners), -1, -1, -1), grey, corners[:, 0], corners[:, 1])
            logits = digits_cnn(images)
            fooled = logits.argmax(1) != y[i]
            loss = F.cross_entropy(logits, y[i].expand(len(corners)), reduction="none")
            want = int(fooled.nonzero()[0]) if fooled.any() else int(loss.argmax())
            assert info.extras["top"][i].item() == corners[want, 0].item()
            assert info.extras["left"][i].item() == corners[want, 1].item()
    assert PatchThreat(3).contains(x, info.x_adv).all()
    assert (info.norm <= 9).all() and (info.queries[~clean_wrong] == 1 + len(corners)).all()
    with torch.no_grad():
        assert torch.equal(info.success, digits_cnn(info.x_adv).argmax(1) != y)


@pytest.mark.parametrize("fill", ["black", "grey", "noise", "mean"])
def test_occlusion_fills_are_seeded_and_inside_the_threat(fill, digits, digits_cnn):
    x, y = digits[2][:8], digits[3][:8]
    first = occlusion(digits_cnn, x, y, size=4, stride=2, fill=fill, generator=_gen(1))
    again = occlusion(digits_cnn, x, y, size=4, stride=2, fill=fill, generator=_gen(1))
    assert torch.equal(first, again)
    assert PatchThreat(4).contains(x, first).all()


def test_occlusion_accuracy_has_n_and_an_interval(digits, digits_cnn):
    x, y = digits[2][:60], digits[3][:60]
    small = occlusion_accuracy(digits_cnn, x, y, size=2, stride=2)
    large = occlusion_accuracy(digits_cnn, x, y, size=6, stride=2)
    assert small.total == 60 and small.low <= small.accuracy <= small.high
    assert large.accuracy <= small.accuracy <= small.clean_accuracy
    assert "occlusion 6x6" in str(large)


def test_occlusion_bad_input_is_a_clear_error(digits_cnn):
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="larger than the images"):
        occlusion(digits_cnn, x, y, size=9)
    with pytest.raises(ValueError, match="fill must be one of"):
        occlusion(digits_cnn, x, y, size=2, fill="pink")
    with pytest.raises(ValueError, match="images"):
        occlusion(digits_cnn, x.flatten(1), y, size=2)


def test_patch_threat_contains():
    x = torch.zeros(3, 1, 6, 6)
    x_adv = x.clone()
    x_adv[0, 0, 1:3, 1:3] = 1.0  # one 2x2 square
    x_adv[1, 0, 0, 0] = x_adv[1, 0, 5, 5] = 1.0  # two far-apart pixels
    assert PatchThreat(2).contains(x, x_adv).tolist() == [True, False, True]
    assert PatchThreat(2, positions=[(1, 1)]).contains(x, x_adv).tolist() == [True, False, True]
    assert PatchThreat(2, positions=[(3, 3)]).contains(x, x_adv).tolist() == [False, False, True]
    assert PatchThreat(2).distance(x, x_adv).tolist() == [4.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="size must be an integer"):
        PatchThreat(0)


@pytest.mark.parametrize("positions", ["fixed", "grid", "random"])
def test_per_input_patch_fools_and_stays_in_its_square(positions, digits, digits_cnn):
    x, y = digits[2][:32], digits[3][:32]
    info = patch(digits_cnn, x, y, size=4, positions=positions, location=(2, 2), steps=30,
                 stride=2, return_info=True, generator=_gen())
    allowed = [(2, 2)] if positions == "fixed" else None
    assert PatchThreat(4, positions=allowed).contains(x, info.x_adv).all()
    with torch.no_grad():
        clean_error = (digits_cnn(x).argmax(1) != y).float().mean()
    assert info.success.float().mean() > clean_error + 0.3, info


def test_universal_patch_returns_the_patch_and_its_success_rate(digits, digits_cnn):
    x, y = digits[2][:64], digits[3][:64]
    info = patch(digits_cnn, x, y, size=4, universal=True, positions="random", steps=40,
                 batch_size=32, return_info=True, generator=_gen())
    assert info.patch.shape == (1, 4, 4) and 0 <= float(info.patch.min()) <= float(info.patch.max()) <= 1
    assert info.success_rate == pytest.approx(info.success.float().mean().item())
    assert PatchThreat(4).contains(x, info.x_adv).all()
    plain = patch(digits_cnn, x, y, size=4, universal=True, positions="random", steps=40,
                  batch_size=32, generator=_gen())
    assert torch.equal(plain, info.patch)


def test_patch_bad_input_is_a_clear_error(digits_cnn):
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="outside the"):
        patch(digits_cnn, x, y, size=4, location=(6, 0))
    with pytest.raises(ValueError, match="positions must be one of"):
        patch(digits_cnn, x, y, size=4, positions="everywhere")


def test_masked_pgd_changes_only_the_mask(digits, digits_cnn):
    x, y = digits[2][:32], digits[3][:32]
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, :] = True  # a band across the image
    threat = MaskThreat(mask, eps=0.5)
    info = masked_pgd(digits_cnn, x, y, threat, steps=20, return_info=True, generator=_gen())
    assert threat.contains(x, info.x_adv).all()
    assert torch.equal(info.x_adv[:, :, ~mask], x[:, :, ~mask])
    assert info.success.float().mean() > 0.3
    outside = (x + (~mask).float() * 0.01).clamp(0, 1)  # a change off the mask
    changed = (outside != x).flatten(1).any(dim=1)
    assert torch.equal(threat.contains(x, outside), ~changed)


def test_mask_threat_errors_and_eyeglass_mask():
    with pytest.raises(ValueError, match="does not broadcast"):
        MaskThreat(torch.ones(3, 3)).mask_for(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="only 0/1"):
        MaskThreat(torch.full((8, 8), 0.5))
    with pytest.raises(TypeError, match="MaskThreat"):
        masked_pgd(nn.Flatten(), torch.zeros(1, 1, 8, 8), torch.tensor([0]), PatchThreat(2))
    frame = eyeglass_mask(28, 28)
    assert frame.shape == (28, 28) and 20 < int(frame.sum()) < 200 and not frame[20:].any()
