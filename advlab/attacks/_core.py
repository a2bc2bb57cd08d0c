"""Machinery every attack shares: input checks, the model guard, gradients and the final check.

Every attack in :mod:`advlab.attacks` follows the same contract:

* ``x`` is never modified (attacks work on clones);
* the model's train/eval mode and every parameter's ``requires_grad`` are restored on exit, even
  when the attack raises (:func:`model_guard`);
* gradients are taken with ``torch.autograd.grad`` only, so no ``.grad`` is left on the model;
* the result is re-projected and checked to lie inside the threat model and the bounds
  (:func:`finalize`);
* randomness comes only from the ``generator`` argument.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from advlab.threat import ThreatModel, lp_norm, per_sample_view

LossFn = Callable[[Tensor, Tensor], Tensor]


class AttackInputError(ValueError):
    """Raised for invalid attack inputs (shapes, NaN, bounds, labels)."""


@contextlib.contextmanager
def model_guard(model: nn.Module, train: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (or train mode if ``train``) with frozen parameters; restore both.

    Freezing parameters means the backward pass only computes input gradients (faster) and
    cannot leave ``.grad`` on the weights. Modes and flags are restored even on exceptions.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.train(train)
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def check_inputs(x: Tensor, y: Tensor | None = None, threat: ThreatModel | None = None,
                 bounds: tuple[float, float] | None = None) -> None:
    """Validate an attack's inputs; raise :class:`AttackInputError` saying what to fix."""
    if not isinstance(x, Tensor):
        raise AttackInputError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise AttackInputError(
            f"x must be batch-first with shape (B, ...), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0)")
    if not x.is_floating_point():
        raise AttackInputError(f"x must be a floating-point tensor, got {x.dtype}; use x.float() / 255")
    low, high = bounds if bounds is not None else (threat.bounds if threat else (0.0, 1.0))
    if x.numel():  # one pass and one sync: min and max propagate NaN, and are inf if any value is
        lowest, highest = torch.stack(torch.aminmax(x.detach())).tolist()
        if not (math.isfinite(lowest) and math.isfinite(highest)):
            raise AttackInputError("x contains NaN or inf values; clean the data before attacking")
        if lowest < low - 1e-6 or highest > high + 1e-6:
            raise AttackInputError(
                f"x has values in [{lowest:.4g}, {highest:.4g}] outside the bounds "
                f"[{low:g}, {high:g}]; scale inputs to the bounds (normalisation belongs inside the model)")
    if y is not None:
        if not isinstance(y, Tensor) or y.dim() != 1:
            raise AttackInputError(f"y must be a 1-D tensor of class indices, got {getattr(y, 'shape', y)}")
        if y.shape[0] != x.shape[0]:
            raise AttackInputError(f"label/batch size mismatch: x has {x.shape[0]} samples, y has {y.shape[0]}")
        if y.is_floating_point():
            raise AttackInputError("y must hold integer class indices (dtype int64), not floats or one-hot")


def check_logits(logits: Tensor, y: Tensor | None = None) -> None:
    """Check model outputs: 2-D, finite, labels in range; warn when they look like probabilities."""
    if logits.dim() != 2:
        raise AttackInputError(f"the model must return logits of shape (B, K), got {tuple(logits.shape)}")
    if y is not None and y.numel() and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise AttackInputError(
            f"labels out of range: got values in [{y.min().item()}, {y.max().item()}] "
            f"but the model has {logits.shape[1]} classes")
    if logits.numel() and (logits >= 0).all() and torch.allclose(
            logits.sum(dim=1), torch.ones_like(logits[:, 0]), atol=1e-3):
        warnings.warn(
            "the model's outputs are non-negative and sum to 1: it looks like it returns "
            "probabilities; remove the final softmax so attacks see logits (saturated "
            "probabilities hide gradients and make attacks look weaker than they are)",
            UserWarning, stacklevel=3)


def prepare(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel | None = None) -> Tensor:
    """Run every input check and one forward pass; return the clean logits ``(B, K)``.

    Call inside :func:`model_guard`.
    """
    check_inputs(x, y, threat)
    with torch.no_grad():
        logits = model(x)
    check_logits(logits, y)
    return logits


def input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
               check: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of ``loss_fn(model(x), y).sum()`` w.r.t. ``x``.

    ``check`` runs :func:`check_logits` on the logits before the loss (an attack whose first
    gradient pass is at the clean input uses it instead of a separate clean forward pass).
    Returns ``(grad, per_sample_loss, logits)`` with shapes ``(B, ...)``, ``(B,)``, ``(B, K)``.
    """
    with torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        logits = model(x_req)
        if check:
            check_logits(logits.detach(), y)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_req)
    return grad.detach(), loss.detach(), logits.detach()


def finalize(x: Tensor, x_adv: Tensor, threat: ThreatModel) -> Tensor:
    """Re-project ``x_adv`` into the threat set, verify membership and return it detached."""
    x = x.detach()
    x_adv = threat.project(x, x_adv.detach())
    inside = threat.contains(x, x_adv)
    if not bool(inside.all()):  # pragma: no cover - a bug in an attack, never expected
        raise RuntimeError(f"internal error: {int((~inside).sum())} adversarial examples left the threat model")
    return x_adv


def is_adversarial(logits: Tensor, y: Tensor, targeted: bool = False) -> Tensor:
    """``(B,)`` bool: misclassified (untargeted) or classified as ``y`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits of ``model`` on ``x`` in batches without gradients: ``(B, K)``."""
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in x.split(batch_size)]) if len(x) else model(x)


class MinimalNormResult:
    """What a minimal-norm attack found, per sample.

    Attributes:
        x_adv: ``(B, ...)`` adversarial examples (``x`` itself where the attack failed).
        norms: ``(B,)`` norm of ``x_adv - x`` (``inf`` where the attack failed).
        success: ``(B,)`` bool, ``x_adv`` is misclassified.
        extras: attack-specific details (iterations, constants, ...).
    """

    def __init__(self, x_adv: Tensor, norms: Tensor, success: Tensor, **extras: object) -> None:
        self.x_adv, self.norms, self.success, self.extras = x_adv, norms, success, extras

    def __repr__(self) -> str:
        ok = self.norms[self.success]
        med = f"{ok.median().item():.4g}" if ok.numel() else "n/a"
        return f"MinimalNormResult(n={len(self.norms)}, success={self.success.float().mean().item():.3f}, median_norm={med})"


def minimal_norm_threat(norm: str, bounds: tuple[float, float], supported: tuple[str, ...],
                        attack: str) -> ThreatModel:
    """The radius-0 :class:`ThreatModel` of a minimal-norm attack (validates ``norm`` and ``bounds``)."""
    threat = ThreatModel(norm=norm, eps=0.0, bounds=bounds)
    if threat.norm not in supported:
        raise ValueError(f"{attack} supports norm {' or '.join(map(repr, supported))}, got {norm!r}")
    return threat


def minimal_result(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, norm: str, *,
                   targeted: bool = False, return_info: bool = False,
                   **extras: object) -> Tensor | MinimalNormResult:
    """Verify and package the output of a minimal-norm attack.

    The candidate ``x_adv`` (``(B, ...)``) is re-classified with one forward pass (verify, don't
    trust); where it is not adversarial it is replaced by ``x`` and its norm set to ``inf``.
    Returns ``x_adv`` or, with ``return_info``, a :class:`MinimalNormResult` carrying ``extras``.
    """
    x, x_adv = x.detach(), x_adv.detach()
    success = is_adversarial(predict(model, x_adv), y, targeted)  # (B,)
    x_adv = torch.where(per_sample_view(success, x), x_adv, x)
    if not return_info:
        return x_adv
    norms = lp_norm(x_adv - x, norm)
    norms = torch.where(success, norms, torch.full_like(norms, math.inf))
    return MinimalNormResult(x_adv, norms, success, **extras)
