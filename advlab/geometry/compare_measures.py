"""Per-point geometric quantities of one model, the ingredients of :func:`advlab.geometry.compare`.

Every function takes a model, points ``x`` ``(N, ...)`` and labels ``y`` ``(N,)`` and returns
per-point values ``(N,)`` (``nan`` where the quantity is undefined). References: DeepFool
(Moosavi-Dezfooli, Fawzi & Frossard 2016), boundary curvature in cross-sections (Fawzi,
Moosavi-Dezfooli, Frossard & Soatto 2018), random-noise robustness (Fawzi, Moosavi-Dezfooli &
Frossard 2016), Hutchinson (1990), curvature at scale ``h`` (:mod:`advlab.geometry.scale`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from advlab.attacks.result import AttackResult
from advlab.evaluation.noise import minimal_noise_norm
from advlab.geometry._common import Randomness, rademacher, random_normal, unit
from advlab.geometry.boundary_batch import section_curvatures
from advlab.geometry.hessian import HessianOperator, dense_hessian
from advlab.geometry.scale import ScaleHessianOperator
from advlab.streams import PointStreams
from advlab.threat import flat

#: Largest input dimension for which ``||H||_F^2`` is computed exactly (dense Hessian).
EXACT_FROBENIUS_DIM = 256


def deepfool_info(model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
    """DeepFool L2 with its :class:`AttackResult` (``norm`` ``(N,)``, ``x_adv``, ``success``)."""
    from advlab.attacks.deepfool import deepfool

    return cast(AttackResult, deepfool(model, x, y, norm="l2", return_info=True))


def frobenius(model: nn.Module, x: Tensor, y: Tensor, *, samples: int = 32,
              generator: Randomness = None) -> tuple[Tensor, Tensor, str]:
    """``||H||_F^2`` of the pointwise cross-entropy Hessian: ``(values, standard_errors, method)``.

    Exact (dense Hessian, zero error) when ``d <= EXACT_FROBENIUS_DIM``; otherwise Hutchinson's
    mean of ``||H z||^2`` over ``samples`` Rademacher probes with its standard error.
    """
    dim = flat(x).shape[1]
    if dim <= EXACT_FROBENIUS_DIM:
        exact = dense_hessian(model, x, y).double().pow(2).sum(dim=(1, 2))
        return exact, torch.zeros_like(exact), "exact"
    operator = HessianOperator(model, x, y)
    draws = torch.stack([flat(operator(rademacher(tuple(x.shape), generator=generator, device=x.device,
                                                  dtype=x.dtype))).double().pow(2).sum(dim=1)
                         for _ in range(samples)])  # (S, N)
    error = draws.std(dim=0) / math.sqrt(samples) if samples > 1 else torch.full_like(draws[0], math.nan)
    return draws.mean(dim=0), error, f"hutchinson ({samples} probes)"


def curvature_ratio(model: nn.Module, x: Tensor, y: Tensor, direction: Tensor, *, h: float,
                    random_directions: int = 4, generator: Randomness = None) -> Tensor:
    """``u^T H_h u / mean_v v^T H_h v``: scale-``h`` curvature along the adversarial direction
    ``u`` (unit ``direction``) over that along random unit directions ``v`` (their mean);
    with :class:`PointStreams` each point's ``v`` come from its own stream."""
    operator = ScaleHessianOperator(model, x, y, h=h)
    u = flat(unit(direction))
    along = (flat(operator(u)) * u).sum(dim=1).double()
    randoms = []
    for _ in range(random_directions):
        if isinstance(generator, PointStreams):
            v = flat(unit(random_normal(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)))
        else:
            v = flat(unit(torch.randn(x.shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)))
        randoms.append((flat(operator(v)) * v).sum(dim=1).double())
    return along / torch.stack(randoms).mean(dim=0)


def boundary_curvatures(model: nn.Module, x: Tensor, direction: Tensor, norms: Tensor,
                        second: Tensor, *, resolution: int = 31, extent_factor: float = 2.5) -> Tensor:
    """``|kappa| * r`` per point in the model's own DeepFool plane (``direction``, ``second``):
    the boundary curvature times the distance along ``u``, dimensionless (0 for a flat boundary).

    Sections of half-width ``extent_factor * norms``, evaluated by
    :func:`~advlab.geometry.boundary_batch.section_curvatures` (only the cells the fit reads)."""
    kappa, crossing = section_curvatures(model, x, direction, second, extent_factor * norms.double(),
                                         resolution=resolution)
    return kappa.abs() * crossing


def noise_distances(model: nn.Module, x: Tensor, y: Tensor, *, directions: int = 10,
                    clip: bool = True, bisection_steps: int = 12,
                    generator: Randomness = None) -> Tensor:
    """Median over ``directions`` random lines of the L2 flip distance ``(N,)`` (inf: no flip).

    ``clip=True`` keeps the probes in ``[0, 1]`` (reports the applied perturbation's norm);
    ``clip=False`` probes the function outside the box (searched up to ``4 sqrt(d)``). All lines
    are searched in one :func:`~advlab.evaluation.noise.minimal_noise_norm` call (its per-line
    ``direction_norms``, both rays of each line). ``bisection_steps=12`` after the 8-point scan
    locates each flip to ``max_norm / 8 / 2**12`` (``sqrt(d) / 32768``, about 1e-3 for
    Fashion-MNIST clipped, 4x that unclipped), far below the spread over lines; 20 steps (the
    search's default) cost 60 % more forward passes for digits that no interval resolves.
    With :class:`PointStreams` each point's lines are drawn from its own stream (Gaussian, made
    unit by the search: uniform on the sphere).
    """
    dim = flat(x).shape[1]
    bounds = (0.0, 1.0) if clip else (-math.inf, math.inf)
    max_norm = None if clip else 4.0 * math.sqrt(dim)
    lines: int | Tensor = directions
    if isinstance(generator, PointStreams):
        lines = random_normal((len(x), directions, *x.shape[1:]), generator=generator, device=x.device,
                              dtype=x.dtype)
    info = minimal_noise_norm(model, x, y, directions=lines, bounds=bounds, max_norm=max_norm,
                              bisection_steps=bisection_steps,
                              generator=None if isinstance(generator, PointStreams) else generator)
    per_line = info.extras["direction_norms"].double().cpu()  # (N, directions), inf: no flip
    per_line = torch.where(per_line.isnan(), torch.full_like(per_line, math.inf), per_line)
    return torch.quantile(per_line, 0.5, dim=1)
