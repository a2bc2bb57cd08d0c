"""Threat objects beyond the Lp ball: a square patch anywhere (or at given places), and a mask.

* :class:`PatchThreat` -- ``x_adv`` may differ from ``x`` only inside one ``size x size`` square
  (all channels), at any position or at one of ``positions``; the values inside are free within
  ``bounds``. The threat of occlusions (Sharif et al. 2016 list them among the perturbations a
  classifier must survive) and of adversarial patches (Brown et al. 2017).
* :class:`MaskThreat` -- ``x_adv`` may differ from ``x`` only where ``mask`` is set, by at most
  ``eps`` in Linf there (``eps=1`` on [0, 1] data: anything inside the mask; the eyeglass frames of
  Sharif et al. 2016 are such a mask).

Both offer :meth:`contains` and :meth:`distance` like :class:`advlab.threat.ThreatModel`, so
containment is checked the same way (``threat.contains(x, x_adv).all()``). Shapes: ``x`` is
``(B, C, H, W)``; per-sample quantities are ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from advlab.threat import ATOL, flat, lp_norm

Position = tuple[int, int]


def _in_box(x_adv: Tensor, bounds: tuple[float, float], atol: float) -> Tensor:
    rows = flat(x_adv)
    if not rows.shape[1]:
        return torch.ones(len(x_adv), dtype=torch.bool, device=x_adv.device)
    low, high = rows.amin(dim=1), rows.amax(dim=1)
    return (low >= bounds[0] - atol) & (high <= bounds[1] + atol) & torch.isfinite(low) & torch.isfinite(high)


def changed_pixels(x: Tensor, x_adv: Tensor, atol: float = 0.0) -> Tensor:
    """``(B, H, W)`` bool: the pixels where any channel of ``x_adv`` differs from ``x`` by > atol."""
    if x.dim() != 4:
        raise ValueError(f"patch threats need images (B, C, H, W), got shape {tuple(x.shape)}")
    return ((x_adv - x).abs() > atol).any(dim=1)


def l0_pixels(x: Tensor, x_adv: Tensor) -> Tensor:
    """``(B,)`` number of pixels (spatial positions, all channels together) that changed."""
    return changed_pixels(x, x_adv).flatten(1).sum(dim=1).to(x.dtype)


def _check_bounds(bounds: Sequence[float]) -> tuple[float, float]:
    low, high = (float(b) for b in bounds)
    if not low < high:
        raise ValueError(f"bounds must satisfy low < high, got {tuple(bounds)}")
    return low, high


@dataclass(frozen=True, eq=False)
class PatchThreat:
    """One square of ``size x size`` pixels (all channels) may change, anywhere or at ``positions``.

    Args:
        size: side of the square in pixels (>= 1).
        positions: ``None`` (any position) or a list of ``(top, left)`` corners allowed.
        bounds: valid input range ``(low, high)``.
    """

    size: int
    positions: tuple[Position, ...] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be an integer >= 1 (pixels), got {self.size!r}")
        if self.positions is not None:
            corners = tuple((int(t), int(left)) for t, left in self.positions)
            if not corners or any(t < 0 or left < 0 for t, left in corners):
                raise ValueError("positions must be a non-empty list of (top, left) corners >= 0")
            object.__setattr__(self, "positions", corners)
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """``(B,)`` L0 distance: the number of changed pixels."""
        return l0_pixels(x, x_adv)

    def contains(self, x: Tensor, x_adv: Tensor, atol: float = ATOL) -> Tensor:
        """``(B,)`` bool: every changed pixel lies in one allowed square, and ``x_adv`` is in bounds."""
        changed = changed_pixels(x, x_adv, atol)  # (B, H, W)
        h, w = changed.shape[1:]
        rows, cols = changed.any(dim=2), changed.any(dim=1)  # (B, H), (B, W)
        r_idx = torch.arange(h, device=x.device).expand_as(rows)
        c_idx = torch.arange(w, device=x.device).expand_as(cols)
        top = torch.where(rows, r_idx, h).amin(dim=1)
        bottom = torch.where(rows, r_idx, -1).amax(dim=1)
        left = torch.where(cols, c_idx, w).amin(dim=1)
        right = torch.where(cols, c_idx, -1).amax(dim=1)
        empty = ~rows.any(dim=1)
        if self.positions is None:
            fits = (bottom - top < self.size) & (right - left < self.size)
        else:
            fits = torch.zeros_like(empty)
            for t, lft in self.positions:
                fits |= ((top >= t) & (bottom < t + self.size) & (left >= lft)
                         & (right < lft + self.size))
        return (empty | fits) & _in_box(x_adv, self.bounds, atol)

    def __repr__(self) -> str:
        where = "anywhere" if self.positions is None else f"{len(self.positions)} positions"
        return f"PatchThreat(size={self.size}, {where}, bounds={self.bounds})"


@dataclass(frozen=True, eq=False)
class MaskThreat:
    """Changes only where ``mask`` is set, by at most ``eps`` in Linf (Sharif et al. 2016).

    Args:
        mask: bool or {0, 1} tensor broadcastable to ``x`` (``(C, H, W)``, ``(1, H, W)``,
            ``(H, W)`` or per sample ``(B, C, H, W)``).
        eps: Linf radius inside the mask (``>= bounds`` width: unconstrained inside the mask).
        bounds: valid input range ``(low, high)``.
    """

    mask: Tensor
    eps: float = 1.0
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not isinstance(self.mask, Tensor):
            raise TypeError(f"mask must be a tensor, got {type(self.mask).__name__}")
        mask = self.mask.detach()
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0/1 (or bool) values")
        object.__setattr__(self, "mask", mask.to(torch.bool))
        eps = float(self.eps)
        if not eps >= 0 or eps != eps or eps == float("inf"):
            raise ValueError(f"eps must be finite and >= 0, got {self.eps!r}")
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))

    def mask_for(self, x: Tensor) -> Tensor:
        """The mask as a float tensor broadcast to ``x``'s shape ``(B, ...)``."""
        try:
            return torch.broadcast_to(self.mask.to(x.device), x.shape).to(x.dtype)
        except RuntimeError as exc:
            raise ValueError(f"mask of shape {tuple(self.mask.shape)} does not broadcast to the "
                             f"inputs {tuple(x.shape)}; give (C, H, W), (H, W) or (B, C, H, W)") from exc

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """``(B,)`` Linf norm of ``x_adv - x`` (zero outside the mask for members)."""
        return lp_norm(x_adv - x, "linf")

    def project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """The closest point of the set: ``x`` outside the mask, clamped to the ball and box inside."""
        m = self.mask_for(x)
        e = self.eps * m
        low, high = self.bounds
        lower, upper = (x - e).clamp(min=low), (x + e).clamp(max=high)
        return torch.maximum(torch.minimum(x_adv, upper), lower) * m + x * (1 - m)

    def contains(self, x: Tensor, x_adv: Tensor, atol: float = ATOL) -> Tensor:
        """``(B,)`` bool: unchanged outside the mask, within ``eps`` inside it, and in bounds."""
        m = self.mask_for(x)
        delta = (x_adv - x).abs()
        outside = lp_norm(delta * (1 - m), "linf") <= atol
        inside = lp_norm(delta * m, "linf") <= self.eps * (1 + atol) + atol
        return outside & inside & _in_box(x_adv, self.bounds, atol)

    def __repr__(self) -> str:
        return (f"MaskThreat(mask={int(self.mask.sum())} of {self.mask.numel()} entries, "
                f"eps={self.eps:g}, bounds={self.bounds})")


__all__ = ["MaskThreat", "PatchThreat", "changed_pixels", "l0_pixels"]
