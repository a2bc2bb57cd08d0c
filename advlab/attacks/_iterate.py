"""Pieces the iterative attacks share: the best iterate per sample (bounded attacks), the smallest
adversarial per sample (minimal-norm attacks), per-sample pass counts, projections with explicit
radii, per-sample step sizes and option checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from advlab.threat import Eps, ThreatModel, per_sample_view


def project_onto(threat: ThreatModel, x: Tensor, x_adv: Tensor, eps: Tensor) -> Tensor:
    """:meth:`ThreatModel.project` with explicit per-sample radii ``eps`` ``(B,)``.

    Lets iterative attacks work on a shrinking subset of the batch without building a new
    threat model (and its validation sync) at every step.
    """
    if threat.norm == "linf":
        return torch.clamp(x_adv, *threat.linf_box(x, eps))
    if threat.norm == "l1":
        return threat.project_l1(x, x_adv, eps)
    return threat.clip(x + threat.project_delta(x_adv - x, eps))


def per_sample_step_size(step_size: Eps | None, eps: Tensor, default: Eps) -> Eps:
    """``step_size`` (a number, a ``(B,)`` tensor or ``None`` for ``default``), checked.

    A number stays a Python float, so the step runs as a scalar kernel (``x + a * d``) rather than
    a broadcast multiply; a tensor comes back as ``(B,)`` (one entry expanded to the batch).
    """
    if step_size is None:
        return default
    if not isinstance(step_size, Tensor):
        value = float(step_size)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"step_size must be finite and non-negative, got {step_size!r}")
        return value
    step = step_size.to(dtype=eps.dtype, device=eps.device).reshape(-1)
    if not bool(torch.isfinite(step).all()) or bool((step < 0).any()):
        raise ValueError(f"step_size must be finite and non-negative, got {step_size!r}")
    if step.numel() == 1:
        return step.expand_as(eps).clone()
    if step.shape != eps.shape:
        raise ValueError(f"step_size has {step.numel()} entries but the batch has {eps.numel()}")
    return step


def rows_of(value: Eps, index: Tensor) -> Eps:
    """``value[index]`` for a per-sample tensor; a number is the same for every row."""
    return value[index] if isinstance(value, Tensor) else value


@dataclass
class BestIterate:
    """The most adversarial point seen so far, per sample.

    A successful iterate (misclassified, or classified as the target) beats an unsuccessful one;
    between two of the same kind the higher ``score`` (the attack loss) wins.
    Shapes: ``x`` ``(B, ...)``, ``score`` ``(B,)``, ``success`` ``(B,)`` bool.
    """

    x: Tensor
    score: Tensor
    success: Tensor

    @classmethod
    def start(cls, x: Tensor, score: Tensor, success: Tensor) -> BestIterate:
        return cls(x.detach().clone(), score.detach().clone(), success.clone())

    def update(self, index: Tensor, x_new: Tensor, score: Tensor, success: Tensor) -> None:
        """Offer candidates ``x_new`` ``(A, ...)`` for the samples ``index`` ``(A,)`` (sorted, unique)."""
        x_new, score = x_new.detach(), score.detach()  # an input that requires grad must not reach out=
        if index.shape[0] == self.x.shape[0]:  # the whole batch: in place, no gather or scatter
            better = torch.where(success == self.success, score > self.score, success)
            torch.where(per_sample_view(better, x_new), x_new, self.x, out=self.x)
            torch.where(better, score, self.score, out=self.score)
            self.success |= success
            return
        rows = index
        old_success = self.success[rows]
        better = torch.where(success == old_success, score > self.score[rows], success)
        self.x[rows] = torch.where(per_sample_view(better, x_new), x_new, self.x[rows])
        self.score[rows] = torch.where(better, score, self.score[rows])
        self.success[rows] = old_success | success

    def remaining(self) -> Tensor:
        """Indices ``(A,)`` of the samples without a successful iterate yet."""
        return (~self.success).nonzero().squeeze(1)


@dataclass
class SmallestAdversarial:
    """The smallest successful perturbation seen so far, per sample (minimal-norm attacks).

    Shapes: ``x`` ``(B, ...)`` (the clean input until a success is offered), ``norm`` ``(B,)``
    (``inf`` where nothing succeeded yet, 0 for inputs adversarial to begin with).
    """

    x: Tensor
    norm: Tensor

    @classmethod
    def start(cls, x: Tensor, already: Tensor | None = None) -> SmallestAdversarial:
        """Start at ``x``; samples where ``already`` ``(B,)`` is True count as found with norm 0."""
        norm = torch.full((len(x),), math.inf, dtype=x.dtype, device=x.device)
        if already is not None:
            norm = torch.where(already, torch.zeros_like(norm), norm)
        return cls(x.detach().clone(), norm)

    def update(self, x_new: Tensor, norm: Tensor, success: Tensor, index: Tensor | None = None) -> Tensor:
        """Keep ``x_new`` where it succeeded with a smaller ``norm``; ``index`` ``(A,)`` (sorted,
        unique) names the rows offered (default: the whole batch). Returns the ``(A,)`` improved mask."""
        x_new, norm = x_new.detach(), norm.detach()
        old = self.norm if index is None else self.norm[index]
        improved = success & (norm < old)
        if index is None:
            self.norm = torch.where(improved, norm, self.norm)
            self.x = torch.where(per_sample_view(improved, x_new), x_new, self.x)
        else:
            self.norm[index] = torch.where(improved, norm, old)
            self.x[index] = torch.where(per_sample_view(improved, x_new), x_new, self.x[index])
        return improved

    def found(self) -> Tensor:
        """``(B,)`` bool: a successful perturbation is recorded."""
        return torch.isfinite(self.norm)


class PassCount:
    """Per-sample count of model passes, ``(B,)`` int64; does nothing when not ``enabled`` (so an
    attack called without ``return_info`` pays nothing for it)."""

    def __init__(self, like: Tensor, enabled: bool) -> None:
        self.counts = torch.zeros(len(like), dtype=torch.int64, device=like.device) if enabled else None

    def add(self, index: Tensor | None = None, amount: int = 1) -> None:
        """Count ``amount`` passes for the rows ``index`` ``(A,)`` (unique), or for every row."""
        if self.counts is None:
            return
        if index is None:
            self.counts += amount
        else:
            self.counts[index] += amount


__all__ = ["BestIterate", "PassCount", "SmallestAdversarial", "per_sample_step_size", "project_onto", "rows_of"]
