"""Adversarial patches (Brown et al. 2017) and mask-constrained perturbations (Sharif et al. 2016).

Brown, Mane, Roy, Abadi & Gilmer (2017), "Adversarial Patch": a ``size x size`` square whose
content is free (within the bounds) is optimised by gradient to change the prediction wherever
it is placed, averaging the gradient over random placements (expectation over transformation,
EOT, restricted here to positions). The patch can be per input or **universal** (one patch for a
whole data set). Positions:

* ``"fixed"``: always at ``location`` (``(top, left)``);
* ``"grid"``: EOT over the corners of a grid (``stride``), and each sample then gets the best
  grid position for the final patch;
* ``"random"``: EOT over every position, and each sample is then patched at a fresh uniformly
  random position (what a patch that works *anywhere* must survive).

Sharif, Bhagavatula, Bauer & Reiter (2016), "Accessorize to a Crime": the perturbation lives only
on a mask (eyeglass frames); :func:`masked_pgd` runs Linf PGD (Madry et al. 2018) restricted to
any user mask (:class:`~advlab.attacks.patch_threat.MaskThreat`); :func:`eyeglass_mask` draws a
frame-shaped one.

    x_adv = patch(model, x, y, size=8, positions="random", steps=100)            # per input
    info = patch(model, x, y, size=8, universal=True, steps=300, return_info=True)
    info.patch, info.success_rate                                                # (C, 8, 8), float
    x_adv = masked_pgd(model, x, y, MaskThreat(eyeglass_mask(28, 28), eps=1.0), steps=50)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab import streams
from advlab._checks import check_choice, check_int, check_number
from advlab.attacks._core import (
    input_grad,
    is_adversarial,
    model_guard,
    predict,
    prepare,
    reject_targeted,
)
from advlab.attacks.losses import ce_loss
from advlab.attacks.occlusion import _search, grid_positions, paste
from advlab.attacks.patch_threat import MaskThreat, l0_pixels
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult
from advlab.streams import Randomness, batch_generator
from advlab.threat import ThreatModel

POSITIONS = ("fixed", "grid", "random")


@dataclass
class UniversalPatchResult:
    """A universal patch and how often it succeeds on the data it was computed on.

    Attributes:
        patch: ``(C, size, size)`` in the bounds.
        success_rate: fraction of the inputs misclassified (or sent to ``target``) when patched.
        success: ``(B,)`` bool per input; x_adv: ``(B, C, H, W)`` the patched inputs.
        top, left: ``(B,)`` int64 where each input was patched.
        gradients: gradient passes (per patched image) spent in the optimisation.
    """

    patch: Tensor
    success_rate: float
    success: Tensor
    x_adv: Tensor
    top: Tensor
    left: Tensor
    gradients: int


def _check(x: Tensor, size: int, positions: str, location: tuple[int, int], steps: int,
           step_size: float, eot_positions: int, stride: int, batch_size: int) -> None:
    for name, value in (("size", size), ("steps", steps), ("eot_positions", eot_positions),
                        ("stride", stride), ("batch_size", batch_size)):
        check_int(name, value)
    check_number("step_size", step_size)
    check_choice("positions", positions, POSITIONS)
    if x.dim() != 4:
        raise ValueError(f"patch needs images (B, C, H, W), got shape {tuple(x.shape)}; "
                         "reshape flat inputs to images first")
    h, w = x.shape[2:]
    if size > min(h, w):
        raise ValueError(f"size={size} is larger than the images {(h, w)}; choose a smaller patch")
    top, left = location
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise ValueError(f"location {tuple(location)} puts a {size}x{size} patch outside the "
                         f"{h}x{w} image; need 0 <= top <= {h - size} and 0 <= left <= {w - size}")


def _corners(x: Tensor, size: int, positions: str, stride: int, location: tuple[int, int]) -> Tensor:
    """``(P, 2)`` the corners the optimisation draws from."""
    if positions == "fixed":
        return torch.tensor([location], dtype=torch.int64, device=x.device)
    return grid_positions(x.shape[2], x.shape[3], size, stride if positions == "grid" else 1,
                          device=x.device)


def _draw(corners: Tensor, n: int, generator: Randomness) -> Tensor:
    """``(n, 2)`` corners drawn uniformly (with replacement) from ``corners``."""
    if len(corners) == 1:
        return corners.expand(n, 2)
    index = torch.randint(0, len(corners), (n,), generator=generator, device=corners.device)
    return corners[index]


def _patch_grad(model: nn.Module, x: Tensor, goal: Tensor, values: Tensor, corners: Tensor,
                eot: int, targeted: bool, generator: Randomness) -> Tensor:
    """Gradient ``(N, C, s, s)`` of the EOT-mean loss (CE ascent, or -CE to ``goal`` if targeted)
    w.r.t. the patch ``values`` ``(N, C, s, s)`` of each of ``x`` ``(N, ...)``."""
    eot = 1 if len(corners) == 1 else eot
    where = _draw(corners, len(x) * eot, generator)
    with torch.enable_grad():
        v = values.detach().requires_grad_(True)
        logits = model(paste(x.repeat_interleave(eot, dim=0), v.repeat_interleave(eot, dim=0),
                             where[:, 0], where[:, 1]))
        loss = ce_loss(logits, goal.repeat_interleave(eot)).sum()
        (grad,) = torch.autograd.grad(-loss if targeted else loss, v)
    return grad.detach()


def _place(model: nn.Module, x: Tensor, y: Tensor, values: Tensor, positions: str,
           corners: Tensor, target: Tensor | None, batch_size: int,
           generator: Randomness) -> Tensor:
    """``(B, 2)`` final corner per sample: fixed, best of the grid, or a fresh random draw."""
    if positions == "fixed":
        return corners.expand(len(x), 2).clone()
    if positions == "random":
        return _draw(corners, len(x), generator).clone()
    with torch.no_grad():
        best = _search(model, x, y, values, corners, batch_size, target=target)
    return corners[best]


@register_attack("patch", kind="patch")
@reject_targeted
def patch(model: nn.Module, x: Tensor, y: Tensor, *, size: int, positions: str = "fixed",
          location: tuple[int, int] = (0, 0), steps: int = 100, step_size: float = 0.05,
          universal: bool = False, eot_positions: int = 4, stride: int = 1,
          target: Tensor | None = None, bounds: tuple[float, float] = (0.0, 1.0),
          batch_size: int = 256, return_info: bool = False,
          generator: Randomness = None) -> Tensor | AttackResult | UniversalPatchResult:
    """Adversarial patch (Brown et al. 2017): per input, or one universal patch for ``x``.

    Args:
        model: classifier returning logits ``(B, K)``; x: images ``(B, C, H, W)``; y: labels ``(B,)``.
        size: side of the square patch in pixels.
        positions: ``"fixed"`` (at ``location``), ``"grid"`` (EOT over the corners every
            ``stride`` pixels, then the best grid corner per sample) or ``"random"`` (EOT over
            all positions, then a random position per sample).
        steps, step_size: signed-gradient steps on the patch values (clamped to ``bounds``).
        universal: one patch ``(C, size, size)`` for all of ``x``, optimised on mini-batches of
            ``batch_size`` inputs drawn with ``generator``.
        eot_positions: placements per input and step whose gradients are averaged (EOT).
        target: ``(B,)`` classes to reach (targeted: minimise their cross-entropy).
        batch_size: inputs per universal step (and images per forward of the grid search).
        return_info: per input, an :class:`AttackResult` (``norm`` = changed pixels, L0;
            ``gradients`` per sample; ``extras`` ``top``/``left``); universal, a
            :class:`UniversalPatchResult` instead of the patch.
        generator: the initial patch, the EOT placements and the random final positions.

    Returns:
        per input ``x_adv`` ``(B, C, H, W)`` inside ``PatchThreat(size)``; universal the patch.
    """
    _check(x, size, positions, location, steps, step_size, eot_positions, stride, batch_size)
    low, high = (float(bounds[0]), float(bounds[1]))
    with model_guard(model):
        prepare(model, x, y, ThreatModel("linf", 0.0, (low, high)), target=target)
        x = x.detach()
        goal, targeted = (y, False) if target is None else (target, True)
        corners = _corners(x, size, positions, stride, location)
        shape = (1 if universal else len(x), x.shape[1], size, size)
        generator = batch_generator(generator, x.device)  # placements and batches are batch-level draws
        values = low + (high - low) * torch.rand(shape, generator=generator, dtype=x.dtype, device=x.device)
        for _ in range(steps):
            if universal:
                rows = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator,
                                     device=x.device)
                grad = _patch_grad(model, x[rows], goal[rows], values.expand(len(rows), -1, -1, -1),
                                   corners, eot_positions, targeted, generator).mean(0, keepdim=True)
            else:
                grad = _patch_grad(model, x, goal, values, corners, eot_positions, targeted, generator)
            values = (values + step_size * grad.sign()).clamp(low, high)
        per_sample = values.expand(len(x), -1, -1, -1)
        where = _place(model, x, y, per_sample, positions, corners, target, batch_size, generator)
        x_adv = paste(x, per_sample, where[:, 0], where[:, 1])
        if not (return_info or universal):
            return x_adv
        success = is_adversarial(predict(model, x_adv), y, target=target)
    eot = 1 if len(corners) == 1 else eot_positions
    if universal:
        rate = success.float().mean().item() if len(x) else float("nan")
        return (UniversalPatchResult(values[0], rate, success, x_adv, where[:, 0], where[:, 1],
                                     steps * min(batch_size, len(x)) * eot)
                if return_info else values[0])
    queries = 1 + (len(corners) if positions == "grid" else 0)
    return AttackResult(x_adv, l0_pixels(x, x_adv), success,
                        queries=torch.full((len(x),), queries, dtype=torch.int64, device=x.device),
                        gradients=torch.full((len(x),), steps * eot, dtype=torch.int64, device=x.device),
                        extras={"top": where[:, 0], "left": where[:, 1], "size": size,
                                "positions": positions})


def eyeglass_mask(height: int, width: int, *, thickness: int | None = None) -> Tensor:
    """``(height, width)`` bool frame of a pair of glasses across the upper half of the image
    (two rectangular rims and a bridge), the shape of Sharif et al.'s (2016) perturbation."""
    check_int("height", height, minimum=8)
    check_int("width", width, minimum=8)
    t = thickness or max(1, round(min(height, width) / 14))
    mask = torch.zeros(height, width, dtype=torch.bool)
    top, bottom = round(0.25 * height), round(0.45 * height)
    for left, right in ((round(0.1 * width), round(0.45 * width)), (round(0.55 * width), round(0.9 * width))):
        mask[top:bottom, left:right] = True
        mask[top + t:bottom - t, left + t:right - t] = False
    mask[top:top + t, round(0.45 * width):round(0.55 * width)] = True  # the bridge
    return mask


def masked_pgd(model: nn.Module, x: Tensor, y: Tensor, threat: MaskThreat, *, steps: int = 40,
               step_size: float | None = None, random_start: bool = True, target: Tensor | None = None,
               return_info: bool = False, generator: Randomness = None) -> Tensor | AttackResult:
    """Linf PGD (Madry et al. 2018) restricted to ``threat.mask`` (Sharif et al. 2016).

    ``x`` ``(B, ...)``, ``y`` ``(B,)``; ``step_size`` defaults to ``2.5 * eps / steps``. Returns
    ``x_adv`` inside ``threat`` (the best iterate per sample: the first adversarial one, else
    the last), or an :class:`AttackResult` (``norm`` Linf, ``gradients`` per sample).
    """
    if not isinstance(threat, MaskThreat):
        raise TypeError(f"masked_pgd takes a MaskThreat(mask, eps), got {type(threat).__name__}")
    check_int("steps", steps)
    step = 2.5 * threat.eps / steps if step_size is None else check_number("step_size", step_size)
    with model_guard(model):
        prepare(model, x, y, ThreatModel("linf", 0.0, threat.bounds), target=target)
        x = x.detach()
        m = threat.mask_for(x)
        goal = y if target is None else target
        x_adv = x.clone()
        if random_start:
            noise = streams.rand(tuple(x.shape), generator, dtype=x.dtype, device=x.device) * 2 - 1
            x_adv = threat.project(x, x + threat.eps * noise * m)
        best, done = x_adv.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        sign = -1.0 if target is not None else 1.0
        for _ in range(steps):
            grad, _, logits = input_grad(model, x_adv, goal, ce_loss)
            hit = is_adversarial(logits, y, target=target) & ~done
            best[hit], done = x_adv[hit], done | hit
            x_adv = threat.project(x, x_adv + sign * step * grad.sign() * m)
        best[~done] = x_adv[~done]
        if not return_info:
            return best
        success = is_adversarial(predict(model, best), y, target=target)
    return AttackResult(best, threat.distance(x, best), success,
                        gradients=torch.full((len(x),), steps, dtype=torch.int64, device=x.device),
                        extras={"mask_pixels": int(threat.mask.sum())})


__all__ = ["POSITIONS", "UniversalPatchResult", "eyeglass_mask", "masked_pgd", "patch"]
