"""CURE's finite-difference curvature, shared by the training penalty and the geometry probe.

Moosavi-Dezfooli, Fawzi, Uesato & Frossard (2019), "Robustness via curvature regularization, and
vice versa": with ``g = grad_x l(x)`` and the unit direction ``z = sign(g) / ||sign(g)||_2``,

    ``c(x) = ||grad l(x + h z) - grad l(x)||_2^2  (about h^2 ||H z||^2 for small h)``.

:func:`finite_difference_curvature` is the one implementation:
:class:`advlab.training.defenses.CURE` calls it with ``create_graph=True`` (the penalty is
differentiated through), :func:`advlab.geometry.cure_curvature` without. It sits at the bottom of
the package (it imports only :mod:`advlab.threat`) so both can import it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advlab.threat import lp_norm, per_sample_view

__all__ = ["cure_direction", "finite_difference_curvature"]


def cure_direction(grad: Tensor) -> Tensor:
    """``sign(g) / ||sign(g)||_2`` per sample: ``(B, ...) -> (B, ...)`` (zero rows stay zero)."""
    direction = grad.detach().sign()
    return direction / per_sample_view(lp_norm(direction, "l2").clamp_min(1e-12), direction)


def finite_difference_curvature(model: nn.Module, x: Tensor, y: Tensor, grad: Tensor, *,
                                h: float, loss_fn: Callable[[Tensor, Tensor], Tensor],
                                create_graph: bool = False) -> Tensor:
    """``||grad l(x + h z) - grad l(x)||^2`` per sample: ``(B,)``.

    Args:
        model: the network (in whatever mode and wrapper the caller chose); called once, on the
            probe point ``x + h z`` (not clipped to the input box: it probes the function).
        x: the points ``(B, ...)``; y: their labels ``(B,)``.
        grad: ``grad_x l(x)`` ``(B, ...)``, computed by the caller (training reuses the one of
            its forward pass, with its graph when the penalty is differentiated).
        h: the finite-difference length (L2).
        loss_fn: per-sample loss ``(logits, y) -> (B,)``; ``l`` is its sum over the batch.
        create_graph: keep the graph of the probe gradient (training: the penalty is
            backpropagated to the weights).
    """
    x_h = (x.detach() + h * cure_direction(grad)).requires_grad_(True)
    with torch.enable_grad():
        shifted = loss_fn(model(x_h), y).sum()
        (grad_h,) = torch.autograd.grad(shifted, x_h, create_graph=create_graph)
    difference = grad_h - grad
    return difference.reshape(difference.shape[0], -1).pow(2).sum(dim=1)  # (B,)
