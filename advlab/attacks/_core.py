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
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from advlab._predicates import looks_like_probabilities
from advlab.threat import ThreatModel

LossFn = Callable[[Tensor, Tensor], Tensor]


class AttackInputError(ValueError):
    """Raised for invalid attack inputs (shapes, NaN, bounds, labels)."""


@contextlib.contextmanager
def model_guard(model: nn.Module, *, train: bool = False) -> Iterator[nn.Module]:
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
    if looks_like_probabilities(logits):
        warnings.warn(
            "the model's outputs are non-negative and sum to 1: it looks like it returns "
            "probabilities; remove the final softmax so attacks see logits (saturated "
            "probabilities hide gradients and make attacks look weaker than they are)",
            UserWarning, stacklevel=3)


def prepare(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel | None = None, *,
            target: Tensor | None = None) -> Tensor:
    """Run every input check (``target`` too) and one forward pass; return the clean logits ``(B, K)``.

    Call inside :func:`model_guard`.
    """
    check_inputs(x, y, threat)
    with torch.no_grad():
        logits = model(x)
    check_logits(logits, y)
    check_target(target, y, logits.shape[1])
    return logits


def input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, *,
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


def is_adversarial(logits: Tensor, y: Tensor, *, target: Tensor | None = None) -> Tensor:
    """``(B,)`` bool: misclassified (``pred != y``), or classified as ``target`` when one is given."""
    return reached(logits, y if target is None else target, targeted=target is not None)


def reached(logits: Tensor, goal: Tensor, *, targeted: bool) -> Tensor:
    """``(B,)`` bool: ``pred == goal`` when ``targeted`` (goal = target classes), else ``pred != goal``
    (goal = true labels). The attacks' inner loops carry one label tensor for the loss and this."""
    pred = logits.argmax(dim=1)
    return pred == goal if targeted else pred != goal


TARGETED_REMOVED = ("targeted= was removed: pass the true labels as y and the classes to reach as "
                    "target=")


def reject_targeted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a targeted attack so that the removed ``targeted=`` keyword is a TypeError saying what to do."""
    @functools.wraps(fn)
    def attack(*args: Any, **kwargs: Any) -> Any:
        if "targeted" in kwargs:
            raise TypeError(f"{fn.__name__}: {TARGETED_REMOVED}")
        return fn(*args, **kwargs)

    return attack


def check_target(target: Tensor | None, y: Tensor, num_classes: int | None = None) -> None:
    """Validate the ``target`` classes ``(B,)`` of a targeted attack against the true labels ``y``.

    Raises :class:`AttackInputError` for a wrong type, shape or dtype, a class out of range (when
    ``num_classes`` is known) or a target equal to the true label of its sample.
    """
    if target is None:
        return
    if not isinstance(target, Tensor) or target.dim() != 1 or target.shape != y.shape:
        raise AttackInputError(f"target must be a (B,) tensor of classes like y {tuple(y.shape)}, "
                               f"got {tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise AttackInputError(f"target must hold integer class indices (dtype int64), got {target.dtype}")
    if not target.numel():
        return
    if num_classes is not None and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise AttackInputError(f"target classes out of range: got values in [{int(target.min())}, "
                               f"{int(target.max())}] but the model has {num_classes} classes")
    same = target.to(y.device) == y
    if bool(same.any()):
        raise AttackInputError(f"target equals the true label y for {int(same.sum())} sample(s) "
                               f"(first at index {int(same.nonzero()[0])}); a target must be another class")


#: Points per forward pass on CPU: a small CNN's passes over 512 Fashion-MNIST images took about
#: half the time in chunks of 64 than in one pass (the activations of a chunk stay in the CPU's
#: caches; ``benchmarks/evaluation_scale.py --only kernels``). Accelerators take whole batches.
CPU_CHUNK = 64


def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits of ``model`` on ``x`` in batches without gradients: ``(B, K)``; on CPU in chunks of
    at most :data:`CPU_CHUNK`."""
    if x.device.type == "cpu":
        batch_size = min(batch_size, CPU_CHUNK)
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in x.split(batch_size)]) if len(x) else model(x)


def minimal_norm_threat(norm: str, bounds: tuple[float, float], supported: tuple[str, ...],
                        attack: str) -> ThreatModel:
    """The radius-0 :class:`ThreatModel` of a minimal-norm attack (validates ``norm`` and ``bounds``)."""
    threat = ThreatModel(norm=norm, eps=0.0, bounds=bounds)
    if threat.norm not in supported:
        raise ValueError(f"{attack} supports norm {' or '.join(map(repr, supported))}, got {norm!r}")
    return threat
