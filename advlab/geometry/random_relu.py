"""One gradient step flips random ReLU networks: the networks, the inputs and the step.

Bubeck, Cherapanamjeri, Gidel & Tachet des Combes (2021), "A single gradient step finds
adversarial examples on random two-layers neural networks", and Bartlett, Bubeck &
Cherapanamjeri (2021), "Adversarial examples in multi-layer random ReLU networks": for a ReLU
network ``f: R^d -> R`` with i.i.d. Gaussian weights ``N(0, 1/fan_in)`` and an input ``x`` with
``||x|| = sqrt(d)``, the step

    delta = -(1 + tau) f(x) grad f(x) / ||grad f(x)||^2

(the step that would land on ``-tau f(x)`` if ``f`` were linear) changes the sign of ``f`` with
high probability, and its length is of order ``||x|| / sqrt(d)``: the network is nearly linear
on that scale. :func:`one_step_attack` measures, per input, whether the sign flips, the scaled
step ``||delta|| / ||x|| * sqrt(d)`` and the linearity error
``|f(x + delta) - (f(x) + grad f(x)^T delta)| / |f(x)|`` (the sign flips exactly when it is
below ``tau``).

Networks come from the model registry (``create_model("random_relu", num_classes=1, ...)``,
bias-free), seeded from ``generator``; inputs are uniform on the sphere of radius ``sqrt(d)``.
The sweep over dimensions, widths and depths, its verdicts and its figure are an experiment:
:mod:`advlab.experiments.random_relu`.
"""


from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard
from advlab.geometry._common import random_normal


def random_relu_network(input_dim: int, widths: Sequence[int], *,
                        generator: torch.Generator | None = None) -> nn.Module:
    """A scalar random ReLU network ``(N, d) -> (N, 1)`` from the registry, seeded by ``generator``."""
    from advlab.models import create_model

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return create_model("random_relu", num_classes=1, input_shape=(int(input_dim),),
                        widths=tuple(int(w) for w in widths), seed=seed).eval()


def sphere_points(count: int, dim: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``count`` points uniform on the sphere of radius ``sqrt(dim)``: ``(count, dim)``."""
    points = random_normal((count, dim), generator=generator)
    return points * (math.sqrt(dim) / points.norm(dim=1, keepdim=True).clamp_min(1e-12))


def one_step_attack(model: nn.Module, x: Tensor, *, tau: float = 0.5) -> dict[str, Tensor]:
    """The single gradient step on a scalar network and what it does, all ``(N,)`` tensors.

    Returns ``f``, ``f_after``, ``flipped`` (bool), ``step_norm`` (``||delta||``),
    ``relative_step`` (``||delta|| / ||x||``), ``scaled_step`` (times ``sqrt(d)``),
    ``linearity_error`` and ``gradient_norm``.
    """
    with model_guard(model), torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        value = model(x_req).reshape(len(x))  # (N,)
        (gradient,) = torch.autograd.grad(value.sum(), x_req)
        value = value.detach()
        squared = gradient.pow(2).sum(dim=1).clamp_min(1e-30)  # (N,)
        delta = -(1.0 + tau) * (value / squared)[:, None] * gradient  # (N, d)
        with torch.no_grad():
            after = model(x + delta).reshape(len(x))
    step_norm = delta.norm(dim=1)
    relative = step_norm / x.norm(dim=1)
    linear = value + (gradient * delta).sum(dim=1)  # = -tau * f(x)
    return {
        "f": value, "f_after": after,
        "flipped": torch.sign(after) != torch.sign(value),
        "step_norm": step_norm, "relative_step": relative,
        "scaled_step": relative * math.sqrt(x.shape[1]),
        "linearity_error": (after - linear).abs() / value.abs().clamp_min(1e-30),
        "gradient_norm": squared.sqrt(),
    }
