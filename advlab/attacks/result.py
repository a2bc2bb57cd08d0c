"""One result type for every attack that returns one adversarial input per input.

With ``return_info=True`` the bounded (fgsm, pgd, apgd, square, noise), minimal-norm (deepfool,
cw, fmn) and spatial attacks return an :class:`AttackResult`; without it they return ``x_adv``
alone and pay nothing for the bookkeeping below. ``success`` always comes from a fresh eval-mode
forward pass on the returned ``x_adv`` (verify, don't trust).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlab.attacks._core import is_adversarial, model_guard, predict
from advlab.threat import ThreatModel, lp_norm, per_sample_view


@dataclass(init=False, repr=False)
class AttackResult:
    """What an attack returned, per sample.

    Attributes:
        x_adv: ``(B, ...)`` adversarial inputs (``x`` itself where a minimal-norm attack failed).
        norm: ``(B,)`` distance ``||x_adv - x||`` in the attack's norm (``inf`` where a
            minimal-norm attack failed).
        success: ``(B,)`` bool from a fresh forward on ``x_adv``: ``pred != y`` (untargeted) or
            ``pred == target`` (targeted).
        queries: ``(B,)`` int64 forward passes spent per sample (black-box attacks), else ``None``.
        gradients: ``(B,)`` int64 gradient passes spent per sample (gradient attacks), else ``None``.
        extras: attack-specific details (``steps``, constants, transform parameters, ...).

    Extra keyword arguments of the constructor go into ``extras`` (the 0.1 ``MinimalNormResult``
    constructor ``(x_adv, norms, success, **extras)`` keeps working).
    """

    x_adv: Tensor
    norm: Tensor
    success: Tensor
    queries: Tensor | None = None
    gradients: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __init__(self, x_adv: Tensor, norm: Tensor, success: Tensor, *, queries: Tensor | None = None,
                 gradients: Tensor | None = None, extras: dict[str, Any] | None = None,
                 **more_extras: Any) -> None:
        self.x_adv, self.norm, self.success = x_adv, norm, success
        self.queries, self.gradients = queries, gradients
        self.extras = {**(extras or {}), **more_extras}

    @property
    def norms(self) -> Tensor:
        """Deprecated alias of :attr:`norm` (the 0.1 ``MinimalNormResult.norms``)."""
        return self.norm

    def __repr__(self) -> str:
        n = len(self.success)
        rate = self.success.float().mean().item() if n else float("nan")
        ok = self.norm[self.success]
        median = f"{ok.median().item():.4g}" if ok.numel() else "n/a"
        return f"AttackResult(n={n}, success={rate:.3f}, median_norm={median})"


#: The 0.1 name of :class:`AttackResult` (minimal-norm attacks); kept for one release.
MinimalNormResult = AttackResult


def _counts(value: Tensor | int | None, like: Tensor) -> Tensor | None:
    """``(B,)`` int64 per-sample counts from a tensor or one number for every sample."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.to(dtype=torch.int64, device=like.device)
    return torch.full((len(like),), int(value), dtype=torch.int64, device=like.device)


def bounded_result(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, threat: ThreatModel | str, *,
                   target: Tensor | None = None, queries: Tensor | int | None = None,
                   gradients: Tensor | int | None = None, **extras: Any) -> AttackResult:
    """Package ``x_adv`` ``(B, ...)`` with one fresh eval-mode forward; ``norm`` is the threat's
    distance (or the Lp norm named by ``threat``)."""
    x, x_adv = x.detach(), x_adv.detach()
    with model_guard(model):
        success = is_adversarial(predict(model, x_adv), y, target=target)  # (B,)
    norm = threat.distance(x, x_adv) if isinstance(threat, ThreatModel) else lp_norm(x_adv - x, threat)
    return AttackResult(x_adv, norm, success, queries=_counts(queries, x), gradients=_counts(gradients, x),
                        extras=extras)


def minimal_result(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, norm: str, *,
                   target: Tensor | None = None, return_info: bool = False,
                   queries: Tensor | int | None = None, gradients: Tensor | int | None = None,
                   **extras: Any) -> Tensor | AttackResult:
    """Verify and package the output of a minimal-norm attack.

    The candidate ``x_adv`` (``(B, ...)``) is re-classified with one forward pass (verify, don't
    trust); where it is not adversarial it is replaced by ``x`` and its norm set to ``inf``.
    Returns ``x_adv`` or, with ``return_info``, an :class:`AttackResult` carrying ``extras``.
    """
    x, x_adv = x.detach(), x_adv.detach()
    with model_guard(model):
        success = is_adversarial(predict(model, x_adv), y, target=target)  # (B,)
    x_adv = torch.where(per_sample_view(success, x), x_adv, x)
    if not return_info:
        return x_adv
    norms = lp_norm(x_adv - x, norm)
    norms = torch.where(success, norms, torch.full_like(norms, math.inf))
    return AttackResult(x_adv, norms, success, queries=_counts(queries, x),
                        gradients=_counts(gradients, x), extras=extras)


__all__ = ["AttackResult", "MinimalNormResult", "bounded_result", "minimal_result"]
