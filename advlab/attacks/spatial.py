"""Spatial attack: the worst rotation and translation of each image, optionally plus an Lp attack.

Engstrom, Tran, Tsipras, Schmidt & Madry (2019), "Exploring the Landscape of Spatial
Robustness" (ICML): a few degrees of rotation and a few pixels of translation fool standard
classifiers; since the loss over (angle, tx, ty) is non-concave and low-dimensional, exhaustive
grid search (or the best of random draws) is the reliable attack. Images are resampled with
``torch.nn.functional.affine_grid`` / ``grid_sample`` (bilinear, ``align_corners=False``, zero
padding outside the image, then clamped to the bounds).

Conventions: ``angle`` in degrees, positive = counter-clockwise as displayed (``angle=90`` equals
``torch.rot90(x, 1, dims=(2, 3))`` on square images); ``tx``, ``ty`` are fractions of the width
and height, positive = right and down. Rotation is about the image centre and comes first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import streams
from advlab.attacks._core import is_adversarial, model_guard, predict, prepare
from advlab.attacks.losses import ce_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult
from advlab.streams import Randomness
from advlab.threat import ThreatModel, lp_norm

Param = float | Tensor


def _per_sample(value: Param, n: int, like: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() not in (1, n):
        raise ValueError(f"transform parameters need 1 or {n} values, got {t.numel()}")
    return t.expand(n) if t.numel() == 1 else t


def transform(x: Tensor, angle_deg: Param, tx: Param = 0.0, ty: Param = 0.0, *,
              bounds: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """Rotate by ``angle_deg`` then translate by ``(tx, ty)`` (fractions of the image size).

    Args:
        x: images ``(B, C, H, W)``.
        angle_deg, tx, ty: floats or ``(B,)`` tensors (one transform per image).
        bounds: clamp the result into ``bounds`` (``None``: no clamping). Pixels that come from
            outside the image are 0.

    Returns:
        ``(B, C, H, W)`` transformed images.
    """
    if x.dim() != 4:
        raise ValueError(f"spatial transforms need images (B, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    radians = _per_sample(angle_deg, n, x) * (math.pi / 180.0)
    cos, sin = radians.cos(), radians.sin()
    shift_x, shift_y = _per_sample(tx, n, x), _per_sample(ty, n, x)
    # Output pixel p reads input point R^{-1} (p - shift), written in normalised coordinates
    # (the aspect ratio enters because affine_grid scales x and y to [-1, 1] separately).
    theta = torch.stack([
        torch.stack([cos, -sin * (h / w), -2 * (cos * shift_x - sin * shift_y * (h / w))], dim=1),
        torch.stack([sin * (w / h), cos, -2 * (sin * shift_x * (w / h) + cos * shift_y)], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out if bounds is None else out.clamp(*bounds)


def _candidates(n: int, like: Tensor, max_rotation: float, max_translation: float,
                grid: Sequence[int] | None, random_samples: int,
                generator: Randomness) -> Tensor:
    """Transform parameters ``(n, T, 3)`` (angle, tx, ty): the grid first, then random draws."""
    limits = torch.tensor([max_rotation, max_translation, max_translation], dtype=like.dtype,
                          device=like.device)
    parts = []
    if grid is not None:
        axes = [torch.linspace(-1.0, 1.0, k, dtype=like.dtype, device=like.device) if k > 1
                else torch.zeros(1, dtype=like.dtype, device=like.device) for k in grid]
        mesh = torch.cartesian_prod(*axes).reshape(-1, 3) * limits  # (G, 3)
        parts.append(mesh.expand(n, -1, -1))
    if random_samples:
        draws = streams.rand((n, random_samples, 3), generator, dtype=like.dtype, device=like.device)
        parts.append((draws * 2 - 1) * limits)
    return torch.cat(parts, dim=1)


def _check_options(max_rotation: float, max_translation: float, grid: Sequence[int] | None,
                   random_samples: int, lp_steps: int, batch_size: int) -> None:
    if not 0.0 <= max_rotation <= 180.0:
        raise ValueError(f"max_rotation must lie in [0, 180] degrees, got {max_rotation!r}")
    if not 0.0 <= max_translation <= 1.0:
        raise ValueError(f"max_translation must lie in [0, 1] (a fraction of the image size), got {max_translation!r}")
    if grid is not None and (len(grid) != 3 or any(int(k) != k or k < 1 for k in grid)):
        raise ValueError(f"grid must be three integers >= 1 (points per angle, tx, ty), got {grid!r}")
    if int(random_samples) != random_samples or random_samples < 0:
        raise ValueError(f"random_samples must be an integer >= 0, got {random_samples!r}")
    if grid is None and random_samples == 0:
        raise ValueError("nothing to search: give a grid or random_samples > 0")
    for name, value in (("lp_steps", lp_steps), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _search(model: nn.Module, x: Tensor, y: Tensor, params: Tensor, bounds: tuple[float, float],
            batch_size: int) -> Tensor:
    """Worst transform per sample: the first misclassifying one in ``params`` order, else the
    highest cross-entropy. ``x`` ``(n, C, H, W)``, ``params`` ``(n, T, 3)``; returns ``(n, 3)``."""
    n, count = params.shape[:2]
    rows = torch.arange(n, device=x.device)
    best = params[:, 0].clone()  # (n, 3)
    best_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    best_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    chunk = max(1, batch_size // max(n, 1))  # transforms per forward pass
    for start in range(0, count, chunk):
        part = params[:, start:start + chunk]  # (n, k, 3)
        k = part.shape[1]
        images = transform(x.repeat_interleave(k, dim=0), *part.reshape(-1, 3).unbind(1), bounds=bounds)
        labels = y.repeat_interleave(k)
        logits = model(images)  # (n * k, K)
        loss = ce_loss(logits, labels).reshape(n, k)
        fooled = is_adversarial(logits, labels).reshape(n, k)
        # within the chunk: the first fooling transform, else the highest loss
        pick = torch.where(fooled.any(dim=1), fooled.to(torch.int8).argmax(dim=1), loss.argmax(dim=1))
        new_fooled, new_loss = fooled[rows, pick], loss[rows, pick]
        # an earlier fooling transform is kept; otherwise fooling or higher loss wins
        take = ~best_fooled & (new_fooled | (new_loss > best_loss))
        best = torch.where(take[:, None], part[rows, pick], best)
        best_loss = torch.where(take, new_loss, best_loss)
        best_fooled |= new_fooled
    return best


def _lp_attack(model: nn.Module, x_t: Tensor, y: Tensor, threat: ThreatModel, lp_steps: int,
               generator: Randomness, return_info: bool) -> tuple[Tensor, Tensor | None]:
    """PGD (Madry et al. 2018) with ``lp_steps`` steps of ``2.5 eps / lp_steps`` around ``x_t``;
    returns ``x_adv`` and, with ``return_info``, the gradient passes per sample ``(B,)``."""
    from advlab.attacks.pgd import pgd  # lazy: the spatial search does not need it

    out = pgd(model, x_t, y, threat, steps=lp_steps, random_start=False, generator=generator,
              return_info=return_info)
    return (out.x_adv, out.gradients) if isinstance(out, AttackResult) else (out, None)


@register_attack("spatial", kind="spatial")
def spatial(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel | None = None, *,
            max_rotation: float = 30.0, max_translation: float = 0.1,
            grid: Sequence[int] | None = (5, 5, 5), random_samples: int = 0, lp_steps: int = 10,
            bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 4096,
            return_info: bool = False, generator: Randomness = None
            ) -> Tensor | AttackResult:
    """Worst-case rotation + translation (Engstrom et al. 2019), optionally followed by PGD.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: images ``(B, C, H, W)`` (other shapes are refused: rotation needs a 2-D grid).
        y: labels ``(B,)``.
        threat: optional Lp threat model; when given, ``lp_steps`` PGD steps (step
            ``2.5 * eps / lp_steps``, no random start) perturb the transformed image within
            ``threat`` *around the transformed image* (Engstrom et al.'s combined attack).
        max_rotation: largest |angle| in degrees (default 30).
        max_translation: largest |tx|, |ty| as a fraction of the width/height (default 0.1).
        grid: points per axis (angle, tx, ty), evenly spaced over ``[-max, max]`` (one point = 0);
            ``None`` for random search only. Default ``(5, 5, 5)``: 125 transforms.
        random_samples: extra uniform random draws per sample within the limits (``generator``).
        lp_steps: PGD steps when ``threat`` is given (default 10).
        bounds: valid input range when ``threat`` is ``None`` (else ``threat.bounds``).
        batch_size: transformed images per forward pass (the grid is evaluated in batches).
        return_info: return an :class:`~advlab.attacks.result.AttackResult`: ``success`` (the
            returned image is misclassified), ``norm`` the distance ``||x_adv - x||`` in
            ``threat.norm`` (L2 without a threat), ``queries`` the forward passes per sample
            (clean pass and transforms), ``gradients`` the PGD passes (``None`` without a
            threat) and ``extras`` ``(B,)`` tensors ``angle``, ``tx``, ``ty`` (the chosen
            transform; 0 for samples misclassified to begin with) and ``loss`` (cross-entropy
            of the returned image).
        generator: randomness of the random draws.

    Returns:
        ``x_adv`` ``(B, C, H, W)`` in the bounds (per sample the first misclassifying transform in
        grid-then-random order, else the one of highest cross-entropy; samples misclassified
        to begin with are returned unchanged before the Lp step); the result when ``return_info``.
    """
    _check_options(max_rotation, max_translation, grid, random_samples, lp_steps, batch_size)
    bounds = threat.bounds if threat is not None else (float(bounds[0]), float(bounds[1]))
    if x.dim() != 4:
        raise ValueError(f"spatial needs images (B, C, H, W), got shape {tuple(x.shape)}; "
                         "reshape flat inputs to images first")
    with model_guard(model):
        clean_logits = prepare(model, x, y, threat if threat is not None else ThreatModel("linf", 0.0, bounds))
        chosen = torch.zeros(x.shape[0], 3, dtype=x.dtype, device=x.device)  # (B, 3)
        todo = (~is_adversarial(clean_logits, y)).nonzero().squeeze(1)
        if todo.numel():
            params = _candidates(todo.numel(), x, max_rotation, max_translation, grid,
                                 random_samples, generator)
            with torch.no_grad():
                chosen[todo] = _search(model, x[todo], y[todo], params, bounds, batch_size)
        x_adv = transform(x, *chosen.unbind(1), bounds=bounds)
        x_adv = torch.where(chosen.abs().sum(dim=1)[:, None, None, None] > 0, x_adv, x)
        gradients = None
        if threat is not None:
            x_adv, gradients = _lp_attack(model, x_adv, y, threat, lp_steps, generator, return_info)
        if not return_info:
            return x_adv
        logits = predict(model, x_adv)  # a fresh eval-mode forward (inside model_guard)
        queries = torch.ones(len(x), dtype=torch.int64, device=x.device)  # the clean pass
        queries[todo] += params.shape[1] if todo.numel() else 0
        return AttackResult(x_adv, lp_norm(x_adv - x, threat.norm if threat is not None else "l2"),
                            is_adversarial(logits, y), queries=queries, gradients=gradients,
                            extras={"angle": chosen[:, 0], "tx": chosen[:, 1], "ty": chosen[:, 2],
                                    "loss": ce_loss(logits, y)})


__all__ = ["spatial", "transform"]
