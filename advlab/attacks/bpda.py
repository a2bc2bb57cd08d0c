"""BPDA: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018, Sec. 4.1).

A model with a non-differentiable part (input quantisation, ``sign`` activations, hard
thresholds) has zero or useless input gradients ("shattered gradients"), so gradient attacks
stall although the model is not robust. BPDA keeps the forward pass *exact* and replaces only the
backward pass of the non-differentiable part by that of a differentiable approximation:

* :class:`StraightThrough` wraps a model and runs its forward pass under a torch function mode
  that gives ``round``, ``floor``, ``ceil``, ``trunc``, ``sign``, ``heaviside`` and comparisons
  cast to float (``(x > t).float()``, ``.to(dtype)``, ``.type_as``) a straight-through backward
  pass (the identity, or +-1 for a comparison, Bengio et al. 2013) -- their forward values are
  exactly those of the original operations;
* :class:`BackwardSurrogate` returns ``model(x)`` in the forward pass and differentiates a
  stand-in ``surrogate(x)`` (a smooth model, or the classifier behind a differentiable
  approximation of the preprocessing) in the backward pass;
* :func:`bpda` builds either; every attack accepts the result as its model.

Shapes: ``x`` ``(B, ...)``; the wrapped models return logits ``(B, K)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

_ROUNDING = {torch.round, torch.floor, torch.ceil, torch.trunc, torch.sign, torch.fix,
             Tensor.round, Tensor.floor, Tensor.ceil, Tensor.trunc, Tensor.sign, Tensor.fix}
_HEAVISIDE = {torch.heaviside, Tensor.heaviside}
#: comparison -> direction of its straight-through gradient in the first operand
_COMPARISONS = {torch.gt: 1.0, torch.ge: 1.0, torch.lt: -1.0, torch.le: -1.0,
                Tensor.gt: 1.0, Tensor.ge: 1.0, Tensor.lt: -1.0, Tensor.le: -1.0,
                Tensor.__gt__: 1.0, Tensor.__ge__: 1.0, Tensor.__lt__: -1.0, Tensor.__le__: -1.0,
                torch.greater: 1.0, torch.greater_equal: 1.0, torch.less: -1.0,
                torch.less_equal: -1.0}
_CASTS = {Tensor.float, Tensor.double, Tensor.half, Tensor.bfloat16, Tensor.to, Tensor.type,
          Tensor.type_as}


class _Identity(torch.autograd.Function):
    """Forward: the exact ``hard`` values; backward: the incoming gradient, unchanged, to ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, hard: Tensor) -> Tensor:
        return hard

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _Step(torch.autograd.Function):
    """Forward: the exact cast comparison ``hard``; backward: ``+-grad`` to ``a`` and ``-+grad`` to
    ``b`` (the straight-through gradient of a step ``H(a - b)``)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, hard: Tensor, direction: float) -> Tensor:
        ctx.direction, ctx.shapes = direction, (a.shape, b.shape)
        return hard

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        shape_a, shape_b = ctx.shapes
        g = grad * ctx.direction
        return g.sum_to_size(shape_a), (-g).sum_to_size(shape_b), None, None


def _wants_grad(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


class _StraightThroughMode(TorchFunctionMode):
    """Straight-through backward passes for the operations above; forward values unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.compared: dict[int, tuple[Tensor, Tensor, Tensor, float]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _ROUNDING and _wants_grad(args[0]) and not kwargs.get("out"):
            return _Identity.apply(args[0], out.detach())
        if func in _HEAVISIDE and _wants_grad(args[0]):
            return _Identity.apply(args[0], out.detach())
        if func in _COMPARISONS and isinstance(out, Tensor) and len(args) == 2 and (
                _wants_grad(args[0]) or _wants_grad(args[1])):
            a, b = (v if isinstance(v, Tensor) else torch.as_tensor(v) for v in args)
            self.compared[id(out)] = (out, a, b, _COMPARISONS[func])
            return out
        if func in _CASTS and args and id(args[0]) in self.compared and isinstance(out, Tensor) \
                and out.is_floating_point():
            _, a, b, direction = self.compared[id(args[0])]
            b = b.to(a) if isinstance(b, Tensor) else b
            return _Step.apply(a, b, out.detach(), direction)
        return out


class StraightThrough(nn.Module):
    """``model`` with straight-through backward passes for its rounding, sign and threshold
    operations (BPDA with the identity as the approximation); the forward pass is exact."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return self.model(x)
        with _StraightThroughMode():
            return self.model(x)


class BackwardSurrogate(nn.Module):
    """Forward ``model(x)`` exactly, backward through ``surrogate(x)`` (BPDA with a stand-in)."""

    def __init__(self, model: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.model, self.surrogate = model, surrogate

    def forward(self, x: Tensor) -> Tensor:
        exact = self.model(x)
        if not torch.is_grad_enabled():
            return exact
        stand_in = self.surrogate(x)
        return exact.detach() + (stand_in - stand_in.detach())


def bpda(model: nn.Module, surrogate: nn.Module | None = None) -> nn.Module:
    """``model`` with a BPDA backward pass: through ``surrogate`` (a differentiable stand-in
    returning logits ``(B, K)``, e.g. ``nn.Sequential(smooth_preprocessing, classifier)``) when
    given, else straight-through for rounding, sign and thresholds. Pass the result to any attack;
    its forward pass is that of ``model``."""
    if surrogate is None:
        return StraightThrough(model)
    if not isinstance(surrogate, nn.Module):
        raise TypeError(f"surrogate must be an nn.Module returning logits, got {type(surrogate).__name__}")
    return BackwardSurrogate(model, surrogate)


__all__ = ["BackwardSurrogate", "StraightThrough", "bpda"]
