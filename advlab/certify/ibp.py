"""Interval bound propagation: certified Linf robustness (Gowal et al. 2018).

Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli, "On the
Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models" (2018):
an axis-aligned box ``[lower, upper]`` is pushed through the network layer by layer. Affine
layers map the centre ``mu`` and radius ``r`` to ``W mu + b`` and ``|W| r``; monotone layers
(ReLU, max- and average-pooling) map the ends. The output box contains the logits of every input
of the input box, so a point is certified when no other logit can overtake the true one.

    certified = ibp_certify(model, x, y, eps=0.1)          # (B,) bool
    certified_accuracy_ibp(model, x, y, eps=0.1)           # CertifiedAccuracy with a 95 % interval

Supported: nested ``nn.Sequential`` of the layers in :data:`SUPPORTED` (every ``mlp``,
``small_cnn``, ``lenet`` and ``random_relu`` of the zoo, with or without ``normalize=``; not
``preact_resnet18``, whose residual blocks are not sequential).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from advlab.attacks._core import AttackInputError, check_inputs, model_guard
from advlab.models.normalize import Normalize
from advlab.stats import CertifiedAccuracy, accuracy_with_interval

Box = tuple[Tensor, Tensor]


def _affine(box: Box, forward: Callable[[Tensor], Tensor], radius: Callable[[Tensor], Tensor]) -> Box:
    """Centre/radius form: ``mu -> forward(mu)``, ``r -> radius(r)`` (``radius`` uses ``|W|``)."""
    lower, upper = box
    mu, r = forward((upper + lower) / 2), radius((upper - lower) / 2)
    return mu - r, mu + r


def _linear(m: nn.Linear, box: Box) -> Box:
    return _affine(box, m, lambda r: F.linear(r, m.weight.abs()))


def _conv(m: nn.Conv2d, box: Box) -> Box:
    return _affine(box, m, lambda r: m._conv_forward(r, m.weight.abs(), None))


def _channel_affine(scale: Tensor, shift: Tensor, box: Box) -> Box:
    """``x * scale + shift`` per channel (dim 1) of ``(B, C, ...)`` boxes."""
    view = (1, -1) + (1,) * (box[0].dim() - 2)
    scale, shift = scale.view(view), shift.view(view)
    return _affine(box, lambda mu: mu * scale + shift, lambda r: r * scale.abs())


def _batch_norm(m: nn.modules.batchnorm._BatchNorm, box: Box) -> Box:
    if m.training or m.running_mean is None or m.running_var is None:
        raise ValueError(f"{type(m).__name__} needs eval mode and running statistics for IBP "
                         "(batch statistics depend on the whole batch); call model.eval()")
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -m.running_mean * scale + (m.bias if m.bias is not None else 0.0)
    return _channel_affine(scale, shift, box)


def _normalize(m: Normalize, box: Box) -> Box:
    return _channel_affine(1 / m.std, -m.mean / m.std, box)


def _monotone(m: nn.Module, box: Box) -> Box:
    """Layers that are non-decreasing in every input: map both ends."""
    if isinstance(m, nn.LeakyReLU) and m.negative_slope < 0:
        raise ValueError(f"LeakyReLU with negative_slope={m.negative_slope} is not monotone")
    if isinstance(m, nn.MaxPool2d) and m.return_indices:
        raise ValueError("MaxPool2d(return_indices=True) returns indices; IBP needs plain outputs")
    return m(box[0]), m(box[1])


def _dropout(m: nn.Module, box: Box) -> Box:
    if m.training:
        raise ValueError(f"{type(m).__name__} in train mode is random; call model.eval() for IBP")
    return box


def _identity(m: nn.Module, box: Box) -> Box:
    return box


def _flatten(m: nn.Flatten, box: Box) -> Box:
    return m(box[0]), m(box[1])


SUPPORTED: dict[type[nn.Module], Callable[[Any, Box], Box]] = {
    nn.Linear: _linear, nn.Conv2d: _conv, nn.ReLU: _monotone, nn.LeakyReLU: _monotone,
    nn.MaxPool2d: _monotone, nn.AvgPool2d: _monotone, nn.AdaptiveAvgPool2d: _monotone,
    nn.Flatten: _flatten, nn.Identity: _identity, nn.Dropout: _dropout,
    nn.BatchNorm1d: _batch_norm, nn.BatchNorm2d: _batch_norm, Normalize: _normalize,
}
"""The layers IBP propagates through (exact types: subclasses may change ``forward``)."""


def _layers(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``(position, layer)`` of every leaf of nested Sequentials; refuse anything else."""
    if type(model) is nn.Sequential:
        for name, child in model.named_children():
            yield from _layers(child, f"{prefix}.{name}" if prefix else name)
        return
    if type(model) not in SUPPORTED:
        names = ", ".join(sorted(["Sequential", *(t.__name__ for t in SUPPORTED)]))
        raise NotImplementedError(
            f"IBP does not support {type(model).__name__} at position {prefix or '<model>'!r}; "
            f"supported layers: {names} (nested Sequentials of them)")
    yield prefix or "<model>", model


def _check_box(lower: Tensor, upper: Tensor) -> None:
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper differ in shape: {tuple(lower.shape)} vs {tuple(upper.shape)}")
    if not bool((lower <= upper).all()):
        raise ValueError("the input box is empty somewhere: need lower <= upper elementwise")


def _propagate(layers: list[tuple[str, nn.Module]], box: Box) -> Box:
    for _, layer in layers:
        box = SUPPORTED[type(layer)](layer, box)
    return box


def ibp_bounds(model: nn.Module, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Interval bounds on the outputs of ``model`` over the box ``[lower, upper]``.

    ``lower``, ``upper``: ``(B, ...)`` input bounds with ``lower <= upper``. Returns
    ``(lower_logits, upper_logits)``, each ``(B, K)``: for every ``x`` in the box,
    ``lower_logits <= model(x) <= upper_logits`` (up to float rounding). The model is used in
    its current mode (BatchNorm and Dropout must be in eval mode); gradients flow, so the bounds
    can be trained on (Gowal et al. 2018, Sec. 3).
    """
    _check_box(lower, upper)
    return _propagate(list(_layers(model)), (lower, upper))


def _check_labels(y: Tensor, num_classes: int) -> None:
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise AttackInputError(f"labels out of range: got values in [{y.min().item()}, "
                               f"{y.max().item()}] but the model has {num_classes} classes")


def _margin_upper(layers: list[tuple[str, nn.Module]], box: Box, y: Tensor) -> Tensor:
    """Upper bounds ``(B, K)`` of ``logit_k - logit_y`` (0 at ``k == y``).

    When the last layer is Linear it is folded into the margin, ``(W_k - W_y) z + b_k - b_y``,
    which is tighter than subtracting interval logits (Gowal et al. 2018, Sec. 3, "elision").
    """
    last = layers[-1][1] if layers else None
    if not isinstance(last, nn.Linear):
        lower, upper = _propagate(layers, box)
        _check_labels(y, upper.shape[1])
        return upper - lower.gather(1, y[:, None])
    _check_labels(y, last.out_features)
    lower, upper = _propagate(layers[:-1], box)
    mu, r = (upper + lower) / 2, (upper - lower) / 2  # (B, H)
    w_diff = last.weight[None] - last.weight[y][:, None, :]  # (B, K, H)
    bound = torch.einsum("bkh,bh->bk", w_diff, mu) + torch.einsum("bkh,bh->bk", w_diff.abs(), r)
    if last.bias is not None:
        bound = bound + last.bias[None] - last.bias[y][:, None]
    return bound


def ibp_certify(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 512) -> Tensor:
    """``(B,)`` bool: ``model`` provably classifies as ``y`` every point of the Linf ball.

    The ball of radius ``eps`` around ``x`` is intersected with ``bounds``: the input box is
    ``[max(x - eps, low), min(x + eps, high)]``. A point is certified when the IBP upper bound of
    ``logit_k - logit_y`` is ``< 0`` for every ``k != y`` (Gowal et al. 2018). The model runs in
    eval mode (restored afterwards), ``x`` (``(B, ...)``) is not modified; ``y``: ``(B,)`` labels.
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    check_inputs(x, y, bounds=bounds)
    low, high = bounds
    layers = list(_layers(model))
    out = []
    with model_guard(model), torch.no_grad():
        for xs, ys in zip(x.detach().split(batch_size), y.split(batch_size)):
            margin = _margin_upper(layers, ((xs - eps).clamp_min(low), (xs + eps).clamp_max(high)), ys)
            margin.scatter_(1, ys[:, None], -math.inf)
            out.append(margin.amax(dim=1) < 0)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


def certified_accuracy_ibp(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                           bounds: tuple[float, float] = (0.0, 1.0),
                           confidence: float = 0.95) -> CertifiedAccuracy:
    """IBP-certified accuracy at Linf radius ``eps`` with its Clopper-Pearson interval."""
    certified = ibp_certify(model, x, y, eps, bounds=bounds)
    return accuracy_with_interval(int(certified.sum()), len(certified), radius=float(eps),
                                  confidence=confidence)
