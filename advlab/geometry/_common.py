"""Pieces shared by the geometry modules: input checks, labels, random draws, unit directions, planes.

Shapes: ``x`` is batch-first ``(B, ...)``; per-sample quantities are ``(B,)``; flattened inputs
are ``(B, D)`` with ``D = prod(x.shape[1:])``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks._core import check_inputs, predict
from advlab.streams import PointStreams
from advlab.threat import flat, per_sample_view

#: What the draw helpers take: a generator, per-point streams, or None (torch's global RNG).
Randomness = torch.Generator | PointStreams | None

#: Geometry probes may leave the input box on purpose, so only shape and finiteness are checked.
NO_BOUNDS = (-math.inf, math.inf)


def check_batch(x: Tensor, y: Tensor | None = None) -> None:
    """Shape, dtype and finiteness checks on a batch (no bounds: probes may leave [0, 1])."""
    check_inputs(x, y, bounds=NO_BOUNDS)


def labels_or_predictions(model: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """``y`` when given, otherwise the model's predicted classes ``(B,)``. Call inside ``model_guard``."""
    if y is not None:
        return y
    return predict(model, x).argmax(dim=1)


def random_normal(shape: tuple[int, ...], *, generator: Randomness,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal samples drawn on the generator's device, then moved to ``device``
    (with :class:`PointStreams`, row ``i`` of ``shape`` ``(B, ...)`` from point ``i``'s stream)."""
    if isinstance(generator, PointStreams):
        sample = generator.normal(shape, dtype=dtype)
        return sample.to(device) if device is not None else sample
    draw_device = generator.device if generator is not None else (device or "cpu")
    sample = torch.randn(shape, generator=generator, device=draw_device, dtype=dtype)
    return sample.to(device) if device is not None else sample


def rademacher(shape: tuple[int, ...], *, generator: Randomness,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Independent +-1 entries with probability 1/2 each (Hutchinson's probe vectors)."""
    draw_device = generator.device if generator is not None else (device or "cpu")
    if isinstance(generator, PointStreams):
        bits = generator.bits(shape)
    else:
        bits = torch.randint(0, 2, shape, generator=generator, device=draw_device)
    return (2 * bits - 1).to(device=device or draw_device, dtype=dtype)


def unit(t: Tensor, eps: float = 1e-12) -> Tensor:
    """Each sample of ``t`` ``(B, ...)`` divided by its L2 norm (zero rows stay zero)."""
    norms = flat(t).norm(dim=1).clamp_min(eps)  # (B,)
    return t / per_sample_view(norms, t)


def orthonormal_pair(direction1: Tensor, direction2: Tensor | None = None, *,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Orthonormal ``(u, v)`` spanning the plane of two directions, per sample.

    ``u = direction1 / ||direction1||``; ``v`` is ``direction2`` (a standard normal draw from
    ``generator`` when ``None``) with its component along ``u`` removed, then normalised
    (Gram-Schmidt). Shapes ``(B, ...)`` in and out.
    """
    if direction2 is not None and direction2.shape != direction1.shape:
        raise ValueError(f"the two directions must have the same shape, got "
                         f"{tuple(direction1.shape)} and {tuple(direction2.shape)}")
    if bool((flat(direction1).norm(dim=1) == 0).any()):
        raise ValueError("direction1 is zero for some sample; pass a non-zero direction "
                         "(e.g. a DeepFool perturbation or the loss gradient)")
    u = unit(direction1)
    if direction2 is None:
        direction2 = random_normal(tuple(u.shape), generator=generator, device=u.device, dtype=u.dtype)
    along = (flat(direction2) * flat(u)).sum(dim=1)  # (B,)
    v = direction2 - per_sample_view(along, u) * u
    if bool((flat(v).norm(dim=1) <= 1e-6 * flat(direction2).norm(dim=1)).any()):
        raise ValueError("direction2 is parallel to direction1; pass an independent direction")
    return u, unit(v)


def grid_axis(extent: float, resolution: int) -> Tensor:
    """``resolution`` evenly spaced values in ``[-extent, extent]``; an odd count contains 0 exactly."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    if not (isinstance(extent, (int, float)) and math.isfinite(extent) and extent > 0):
        raise ValueError(f"extent must be a positive finite number, got {extent!r}")
    axis = torch.linspace(-float(extent), float(extent), resolution)
    if resolution % 2 == 1:
        axis[resolution // 2] = 0.0
    return axis
