"""Occlusion attack: the worst-case occluding square of a given size, by search over positions.

Occlusions are one of the perturbations a classifier must survive besides adversarial noise,
random noise and geometric transformations (Sharif, Bhagavatula, Bauer & Reiter 2016, "Accessorize
to a Crime"; Zeiler & Fergus 2014 slide a grey square over the image to see what a network
looks at). The attack is exhaustive (``stride=1``) or strided search over the corners of a
``size x size`` square filled with black, grey, uniform noise or the image's mean colour; the
candidate images are evaluated in batches. Per sample it keeps the first position (in row-major
order) that is misclassified, else the one of highest cross-entropy (as :func:`advlab.attacks.spatial`).

    x_occ = occlusion(model, x, y, size=8)                                  # (B, C, H, W)
    info = occlusion(model, x, y, size=8, stride=2, fill="grey", return_info=True)
    info.extras["top"], info.extras["left"]                                 # worst corners (B,)
    occlusion_accuracy(model, x, y, size=8)                                 # accuracy with n and 95 % CI
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from advlab import streams
from advlab._checks import check_choice, check_int
from advlab.attacks._core import is_adversarial, model_guard, predict, prepare
from advlab.attacks.losses import ce_loss
from advlab.attacks.patch_threat import PatchThreat, l0_pixels
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult
from advlab.streams import Randomness
from advlab.threat import ThreatModel

FILLS = ("black", "grey", "noise", "mean")


def grid_positions(h: int, w: int, size: int, stride: int, *, device: torch.device | None = None) -> Tensor:
    """``(P, 2)`` int64 corners ``(top, left)`` of a ``size`` square every ``stride`` pixels,
    row-major, always including the last row and column (the square touches the far edges)."""
    def axis(n: int) -> list[int]:
        last = n - size
        return sorted({*range(0, last + 1, stride), last})

    tops, lefts = torch.tensor(axis(h)), torch.tensor(axis(w))
    return torch.cartesian_prod(tops, lefts).reshape(-1, 2).to(device)


def paste(x: Tensor, values: Tensor, top: Tensor, left: Tensor) -> Tensor:
    """``x`` ``(N, C, H, W)`` with ``values`` ``(N, C, s, s)`` pasted at ``(top, left)`` ``(N,)``.

    Differentiable in ``values`` (and in ``x`` outside the squares); ``x`` is not modified.
    """
    n, size = len(x), values.shape[-1]
    offsets = torch.arange(size, device=x.device)
    rows = (top.to(x.device)[:, None] + offsets)[:, :, None]  # (N, s, 1)
    cols = (left.to(x.device)[:, None] + offsets)[:, None, :]  # (N, 1, s)
    index = torch.arange(n, device=x.device)[:, None, None]
    out = x.clone()
    out[index, :, rows, cols] = values.permute(0, 2, 3, 1).to(x.dtype)  # advanced dims first: (N, s, s, C)
    return out


def _fill_values(x: Tensor, size: int, fill: str, bounds: tuple[float, float],
                 generator: Randomness) -> Tensor:
    """``(B, C, size, size)`` content of the occluding square per sample."""
    b, c = x.shape[:2]
    low, high = bounds
    if fill == "black":
        return torch.full((b, c, size, size), low, dtype=x.dtype, device=x.device)
    if fill == "grey":
        return torch.full((b, c, size, size), (low + high) / 2, dtype=x.dtype, device=x.device)
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand(b, c, size, size).clone()
    noise = streams.rand((b, c, size, size), generator, dtype=x.dtype, device=x.device)
    return low + (high - low) * noise


def _search(model: nn.Module, x: Tensor, y: Tensor, values: Tensor, corners: Tensor,
            batch_size: int, *, target: Tensor | None = None) -> Tensor:
    """Index ``(n,)`` into ``corners`` ``(P, 2)`` of the worst square ``values`` ``(n, C, s, s)``
    per sample of ``x`` ``(n, ...)``: the first fooling one, else the highest cross-entropy
    (lowest cross-entropy to ``target`` when one is given)."""
    n, count = len(x), len(corners)
    rows = torch.arange(n, device=x.device)
    best = torch.zeros(n, dtype=torch.int64, device=x.device)
    best_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    best_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    chunk = max(1, batch_size // max(n, 1))  # positions per forward pass
    for start in range(0, count, chunk):
        part = corners[start:start + chunk]  # (k, 2)
        k = len(part)
        images = paste(x.repeat_interleave(k, dim=0), values.repeat_interleave(k, dim=0),
                       part[:, 0].repeat(n), part[:, 1].repeat(n))
        labels = y.repeat_interleave(k)
        goal = None if target is None else target.repeat_interleave(k)
        logits = model(images)
        loss = (ce_loss(logits, labels) if goal is None else -ce_loss(logits, goal)).reshape(n, k)
        fooled = is_adversarial(logits, labels, target=goal).reshape(n, k)
        pick = torch.where(fooled.any(dim=1), fooled.to(torch.int8).argmax(dim=1), loss.argmax(dim=1))
        new_fooled, new_loss = fooled[rows, pick], loss[rows, pick]
        take = ~best_fooled & (new_fooled | (new_loss > best_loss))
        best = torch.where(take, pick + start, best)
        best_loss = torch.where(take, new_loss, best_loss)
        best_fooled |= new_fooled
    return best


def _check_options(x: Tensor, size: int, stride: int, fill: str, batch_size: int) -> None:
    check_int("size", size)
    check_int("stride", stride)
    check_int("batch_size", batch_size)
    check_choice("fill", fill, FILLS)
    if x.dim() != 4:
        raise ValueError(f"occlusion needs images (B, C, H, W), got shape {tuple(x.shape)}; "
                         "reshape flat inputs to images first")
    if size > min(x.shape[2:]):
        raise ValueError(f"size={size} is larger than the images {tuple(x.shape[2:])}; choose a smaller square")


@register_attack("occlusion", kind="patch")
def occlusion(model: nn.Module, x: Tensor, y: Tensor, *, size: int, stride: int = 1,
              fill: str = "black", bounds: tuple[float, float] = (0.0, 1.0),
              batch_size: int = 4096, return_info: bool = False,
              generator: Randomness = None) -> Tensor | AttackResult:
    """The worst-case occluding square per sample (exhaustive or strided search).

    Args:
        model: classifier returning logits ``(B, K)``.
        x: images ``(B, C, H, W)`` in ``bounds``; y: labels ``(B,)``.
        size: side of the square in pixels.
        stride: distance between tried corners (1: every position; the last row and column are
            always tried).
        fill: ``"black"`` (``bounds[0]``), ``"grey"`` (mid-range), ``"noise"`` (uniform in the
            bounds, one draw per sample from ``generator``) or ``"mean"`` (the image's mean
            colour per channel).
        batch_size: occluded images per forward pass.
        return_info: return an :class:`~advlab.attacks.result.AttackResult`: ``success`` from a
            fresh forward, ``norm`` the number of changed pixels (L0, at most ``size**2``),
            ``queries`` forward passes per sample, ``extras`` ``top``/``left`` ``(B,)`` int64
            (``-1`` for samples misclassified to begin with, returned unchanged) and ``loss``.

    Returns:
        ``x_adv`` ``(B, C, H, W)``, inside ``PatchThreat(size)``; or the result.
    """
    _check_options(x, size, stride, fill, batch_size)
    bounds = (float(bounds[0]), float(bounds[1]))
    with model_guard(model):
        clean = prepare(model, x, y, ThreatModel("linf", 0.0, bounds))
        x = x.detach()
        corners = grid_positions(x.shape[2], x.shape[3], size, stride, device=x.device)
        values = _fill_values(x, size, fill, bounds, generator)
        chosen = torch.full((len(x), 2), -1, dtype=torch.int64, device=x.device)
        todo = (~is_adversarial(clean, y)).nonzero().squeeze(1)
        x_adv = x.clone()
        if todo.numel():
            with torch.no_grad():
                best = _search(model, x[todo], y[todo], values[todo], corners, batch_size)
            chosen[todo] = corners[best]
            x_adv[todo] = paste(x[todo], values[todo], *chosen[todo].unbind(1))
        if not return_info:
            return x_adv
        logits = predict(model, x_adv)
        queries = torch.ones(len(x), dtype=torch.int64, device=x.device)
        queries[todo] += len(corners)
        return AttackResult(x_adv, l0_pixels(x, x_adv), is_adversarial(logits, y), queries=queries,
                            extras={"top": chosen[:, 0], "left": chosen[:, 1], "size": size,
                                    "fill": fill, "loss": ce_loss(logits, y)})


@dataclass(frozen=True)
class OcclusionAccuracy:
    """Accuracy under the worst occluding square, with its Clopper-Pearson interval."""

    size: int
    fill: str
    accuracy: float
    low: float
    high: float
    correct: int
    total: int
    clean_accuracy: float
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"occlusion {self.size}x{self.size} ({self.fill}): {self.accuracy:.3f} "
                f"[{self.low:.3f}, {self.high:.3f}] ({self.correct}/{self.total}; clean "
                f"{self.clean_accuracy:.3f})")


def occlusion_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, size: int, stride: int = 1,
                       fill: str = "black", bounds: tuple[float, float] = (0.0, 1.0),
                       batch_size: int = 4096, confidence: float = 0.95,
                       generator: Randomness = None) -> OcclusionAccuracy:
    """Robust accuracy against :func:`occlusion` on ``(x, y)``, with ``n`` and a two-sided
    Clopper-Pearson interval at ``confidence`` (the empirical robust accuracy: an upper bound)."""
    from advlab.stats import clopper_pearson_interval

    info = occlusion(model, x, y, size=size, stride=stride, fill=fill, bounds=bounds,
                     batch_size=batch_size, return_info=True, generator=generator)
    with model_guard(model):
        clean = (predict(model, x.detach()).argmax(dim=1) == y).float().mean().item() if len(x) else math.nan
    correct, total = int((~info.success).sum()), len(x)
    if not total:
        return OcclusionAccuracy(size, fill, math.nan, math.nan, math.nan, 0, 0, clean, confidence)
    low, high = clopper_pearson_interval(correct, total, confidence=confidence)
    return OcclusionAccuracy(size, fill, correct / total, low, high, correct, total, clean, confidence)


__all__ = ["FILLS", "OcclusionAccuracy", "PatchThreat", "grid_positions", "occlusion",
           "occlusion_accuracy", "paste"]
