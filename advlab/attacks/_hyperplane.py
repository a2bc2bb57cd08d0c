"""Minimal-norm steps onto a hyperplane inside a box: the geometry of FAB, one solver per norm.

For each row, given a point ``t`` ``(B, D)``, a normal ``w`` ``(B, D)`` and a required change
``r`` ``(B,)``, find the perturbation ``d`` of smallest Lp norm with ``w . d = r`` and
``low <= t + d <= high`` (Croce & Hein 2020, FAB, the projection of Section 3.1). When the box
cannot supply ``r``, the perturbation that gets as close as the box allows is returned (every
coordinate on the bound in the useful direction).

After flipping the sign of ``w`` so that the change required is ``|r|``, coordinate ``i`` moves by
``a_i = |d_i|`` in the direction ``sign(w_i)`` and can move at most ``room_i`` (the distance to the
bound in that direction); it contributes ``|w_i| a_i``:

* ``l1``: a fractional knapsack -- coordinates in decreasing ``|w_i|`` are filled to their room
  until ``|r|`` is reached (the last one partly);
* ``linf``: ``a_i = min(lam, room_i)``; ``l2``: ``a_i = min(lam |w_i|, room_i)``. Both are
  ``sum_i c_i min(lam, beta_i) = |r|`` for a piecewise-linear non-decreasing function of ``lam``,
  solved exactly by sorting the breakpoints ``beta_i`` (no bisection).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hyperplane_step"]


def _knapsack(weight: Tensor, room: Tensor, need: Tensor) -> Tensor:
    """``l1``: amounts ``(B, D)`` filling ``need`` ``(B,)`` by coordinates of largest ``weight``."""
    order = weight.argsort(dim=1, descending=True)
    w_sorted, capacity = weight.gather(1, order), (weight * room).gather(1, order)
    before = capacity.cumsum(dim=1) - capacity  # contribution of the coordinates ranked higher
    supplied = torch.minimum((need[:, None] - before).clamp_min(0.0), capacity)
    amount_sorted = supplied / w_sorted.clamp_min(1e-30)
    return torch.zeros_like(amount_sorted).scatter(1, order, amount_sorted)


def _water_level(coef: Tensor, brk: Tensor, need: Tensor) -> Tensor:
    """The ``lam`` ``(B,)`` with ``sum_i coef_i min(lam, brk_i) = need`` (``inf`` if out of reach)."""
    brk_sorted, order = brk.sort(dim=1)
    c_sorted = coef.gather(1, order)
    below = (c_sorted * brk_sorted).cumsum(dim=1)  # sum over the coordinates capped so far
    rest = c_sorted.sum(dim=1, keepdim=True) - c_sorted.cumsum(dim=1)  # weight still growing
    at_brk = below + brk_sorted * rest  # the function at each breakpoint, non-decreasing
    k = (at_brk < need[:, None]).sum(dim=1)  # the root lies before breakpoint k
    d = brk.shape[1]
    kk = (k - 1).clamp_min(0)[:, None]
    capped = torch.where(k > 0, below.gather(1, kk).squeeze(1), torch.zeros_like(need))
    growing = torch.where(k > 0, rest.gather(1, kk).squeeze(1), c_sorted.sum(dim=1))
    lam = (need - capped) / growing.clamp_min(1e-30)
    return torch.where(k >= d, torch.full_like(lam, float("inf")), lam)


def hyperplane_step(t: Tensor, w: Tensor, r: Tensor, norm: str, bounds: tuple[float, float]) -> Tensor:
    """Smallest ``d`` ``(B, D)`` in ``norm`` with ``(w * d).sum(1) == r`` and ``t + d`` in ``bounds``.

    ``t``, ``w``: ``(B, D)``; ``r``: ``(B,)``. Coordinates with ``w_i == 0`` never move.
    """
    low, high = bounds
    flip = torch.where(r >= 0, 1.0, -1.0).to(w.dtype)[:, None]
    w = w * flip
    need = r.abs()
    weight = w.abs()
    room = torch.where(w > 0, high - t, t - low).clamp_min(0.0) * (weight > 0)
    if norm == "l1":
        amount = _knapsack(weight, room, need)
    elif norm == "linf":
        amount = torch.minimum(_water_level(weight, room, need)[:, None], room)
    elif norm == "l2":
        level = _water_level(weight.square(), room / weight.clamp_min(1e-30), need)
        amount = torch.minimum(level[:, None] * weight, room).nan_to_num(nan=0.0)  # inf * 0: never moves
    else:
        raise ValueError(f"hyperplane_step supports l1, l2 and linf, got {norm!r}")
    return w.sign() * amount
