"""Exact input-Hessian-vector products of a classifier's loss, batched over samples.

For a per-sample loss ``l_i(x_i) = loss(model(x_i), y_i)`` the gradient of ``L = sum_i l_i``
w.r.t. the batch stacks the per-sample gradients ``g_i``. Because samples do not interact (the
model runs in eval mode, so BatchNorm uses running statistics and dropout is off), a second
backward pass of ``sum_i <g_i, v_i>`` returns every ``H_i v_i`` at once: ``B`` Hessian-vector
products for the price of one double backprop (Pearlmutter 1994).

On top of that: the dense Hessian for small inputs, Hutchinson's estimate of ``||H||_F^2``
(Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines", Communications in Statistics - Simulation and Computation 19(2); used by
CURE) and CURE's finite-difference curvature
``||grad l(x + h z) - grad l(x)||^2`` with ``z = sign(grad) / ||sign(grad)||``
(Moosavi-Dezfooli, Fawzi, Uesato & Frossard 2019, "Robustness via curvature regularization, and
vice versa").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.attacks._core import input_grad, model_guard
from advlab.attacks.losses import LossFn, get_loss
from advlab.curvature_fd import finite_difference_curvature
from advlab.geometry._common import check_batch, labels_or_predictions, rademacher
from advlab.threat import flat


class HessianOperator:
    """Input-Hessian-vector products of the loss at a fixed batch of points.

    The forward pass and the first backward pass (with ``create_graph=True``) are done once at
    construction; each call then costs one backward pass through that graph, for all samples.
    Calls are counted in :attr:`calls` (one call = one HVP per sample).

    Args:
        model: classifier returning logits ``(B, K)``; run in eval mode with frozen parameters.
        x: points ``(B, ...)``.
        y: labels ``(B,)``; ``None`` uses the model's predictions.
        loss: a per-sample loss name from :mod:`advlab.attacks.losses` (``"ce"``, ``"cw"``,
            ``"dlr"``) or a callable ``(logits, y) -> (B,)``.

    Attributes:
        gradient: ``(B, ...)`` the input gradient of the loss (detached).
        loss: ``(B,)`` the loss values; ``labels``: ``(B,)``; ``batch_size``, ``dim`` (= D).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor | None = None,
                 loss: str | LossFn = "ce") -> None:
        check_batch(x, y)
        loss_fn = get_loss(loss)
        with model_guard(model), torch.enable_grad():
            self.labels = labels_or_predictions(model, x, y)
            self._x = x.detach().clone().requires_grad_(True)
            per_sample = loss_fn(model(self._x), self.labels)  # (B,)
            (self._grad,) = torch.autograd.grad(per_sample.sum(), self._x, create_graph=True)
        self.loss = per_sample.detach()
        self.gradient = self._grad.detach()
        self.batch_size, self.dim = x.shape[0], flat(x).shape[1]
        self.calls = 0

    def __call__(self, v: Tensor) -> Tensor:
        """``H_i v_i`` for every sample: ``v`` is ``(B, D)`` or ``(B, ...)``; same shape and dtype out."""
        if v.numel() != self._x.numel():
            raise ValueError(f"v must have {self.batch_size} x {self.dim} entries like x "
                             f"{tuple(self._x.shape)}, got shape {tuple(v.shape)}")
        self.calls += 1
        if not self._grad.requires_grad:  # the gradient is constant in x (e.g. a linear model)
            return torch.zeros_like(v)
        direction = v.reshape(self._x.shape).to(self._x.dtype)
        with torch.enable_grad():
            (product,) = torch.autograd.grad(self._grad, self._x, grad_outputs=direction,
                                             retain_graph=True, allow_unused=True)
        if product is None:
            return torch.zeros_like(v)
        return product.reshape(v.shape).to(v.dtype)


def hessian_operator(model: nn.Module, x: Tensor, y: Tensor | None = None,
                     loss: str | LossFn = "ce") -> HessianOperator:
    """A reusable :class:`HessianOperator` at ``x`` (the matvec for :func:`~advlab.geometry.lanczos`)."""
    return HessianOperator(model, x, y, loss)


def input_gradient(model: nn.Module, x: Tensor, y: Tensor | None = None,
                   loss: str | LossFn = "ce") -> Tensor:
    """Input gradient of the per-sample loss: ``(B, ...)``."""
    check_batch(x, y)
    with model_guard(model):
        labels = labels_or_predictions(model, x, y)
        grad, _, _ = input_grad(model, x, labels, get_loss(loss))
    return grad


def hvp(model: nn.Module, x: Tensor, y: Tensor | None, v: Tensor,
        loss: str | LossFn = "ce") -> Tensor:
    """Exact input Hessian-vector products by double backprop: sample ``i`` gets ``H_i v_i``.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: points ``(B, ...)``; ``v``: vectors of the same shape (or ``(B, D)``).
        y: labels ``(B,)`` (``None``: the predicted classes).
        loss: per-sample loss (default cross-entropy of ``y``).

    Returns:
        ``(B, ...)`` shaped like ``v``.
    """
    return HessianOperator(model, x, y, loss)(v)


def dense_hessian(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                  loss: str | LossFn = "ce", batch_size: int = 256) -> Tensor:
    """The full input Hessian of each sample, ``(B, D, D)``, from ``D`` HVPs per sample.

    The basis vectors are pushed through in chunks: ``x`` is replicated so that each copy
    carries one basis vector, and one double backprop gives up to ``batch_size`` Hessian rows.
    The result is symmetrised (``(H + H^T) / 2``). Meant for small ``D`` (digits: 64, 28x28: 784).
    """
    check_batch(x, y)
    with model_guard(model):
        labels = labels_or_predictions(model, x, y)
    count, dim = x.shape[0], flat(x).shape[1]
    chunk = max(1, batch_size // max(count, 1))
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    rows = []
    for start in range(0, dim, chunk):
        basis = eye[start:start + chunk]  # (c, D)
        c = basis.shape[0]
        x_rep = x.unsqueeze(1).expand(count, c, *x.shape[1:]).reshape(count * c, *x.shape[1:])
        v_rep = basis.unsqueeze(0).expand(count, c, dim).reshape(count * c, dim)
        product = hvp(model, x_rep, labels.repeat_interleave(c), v_rep, loss)  # (B*c, D)
        rows.append(product.reshape(count, c, dim))
    hessian = torch.cat(rows, dim=1)  # (B, D, D)
    return 0.5 * (hessian + hessian.transpose(1, 2))


def hutchinson_frobenius(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                         samples: int = 100, loss: str | LossFn = "ce",
                         generator: torch.Generator | None = None,
                         probes_per_pass: int | None = None) -> Tensor:
    """Hutchinson's estimate of ``||H||_F^2 = E_z ||H z||^2`` with Rademacher ``z``: ``(B,)``.

    Unbiased since ``E[z z^T] = I``; ``samples`` HVPs per sample. Used by CURE
    (Moosavi-Dezfooli et al. 2019) to measure how curved the loss is in input space.
    ``probes_per_pass`` copies of the batch go through each double backprop, each with its own
    probe (default: as many as fit in 256 rows), so ``samples`` probes cost
    ``ceil(samples / probes_per_pass)`` passes.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    count = x.shape[0]
    copies = probes_per_pass or max(1, 256 // max(count, 1))
    copies = min(copies, samples)
    with model_guard(model):
        labels = labels_or_predictions(model, x, y)
    operator = HessianOperator(model, x.repeat(copies, *([1] * (x.dim() - 1))),
                               labels.repeat(copies), loss)  # (copies * B, ...)
    total = torch.zeros(count, dtype=torch.float64, device=x.device)
    drawn = 0
    while drawn < samples:
        probe = rademacher((copies * count, *x.shape[1:]), generator=generator, device=x.device,
                           dtype=x.dtype)
        squares = flat(operator(probe)).double().pow(2).sum(dim=1).reshape(copies, count)
        used = min(copies, samples - drawn)
        total += squares[:used].sum(dim=0)
        drawn += used
    return (total / samples).to(x.dtype)


def cure_curvature(model: nn.Module, x: Tensor, y: Tensor | None = None, *, h: float = 0.1,
                   loss: str | LossFn = "ce") -> Tensor:
    """CURE's finite-difference curvature ``||grad l(x + h z) - grad l(x)||^2``: ``(B,)``.

    ``z = sign(grad l(x)) / ||sign(grad l(x))||`` is a unit vector, so the probe point lies at
    L2 distance ``h``; for small ``h`` the value is about ``h^2 ||H z||^2`` (Moosavi-Dezfooli,
    Fawzi, Uesato & Frossard 2019: the CURE regulariser). The probe is not clipped to the input box: it
    measures the function, not a valid image. Two gradient evaluations, no double backprop.
    """
    if not h > 0:
        raise ValueError(f"h must be positive, got {h!r}")
    check_batch(x, y)
    loss_fn = get_loss(loss)
    with model_guard(model):
        labels = labels_or_predictions(model, x, y)
        grad, _, _ = input_grad(model, x, labels, loss_fn)  # (B, ...)
        return finite_difference_curvature(model, x, labels, grad, h=h, loss_fn=loss_fn)
