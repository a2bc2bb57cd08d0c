"""Loss landscapes in input space and in filter-normalised weight space.

* Input space: the per-sample loss along ``x + a d`` (1-D) or over ``x + a d1 + b d2`` (2-D),
  for ``a`` in ``offsets`` (``offsets1``) and ``b`` in ``offsets2``,
  with ``d`` typically the adversarial direction and a random one (as in the CURE and
  cross-section figures). Directions are normalised per sample, so ``a`` is an L2 distance;
  points are not clamped to the input box (clamping would bend the line).
* Weight space: Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the Loss Landscape of
  Neural Nets": the mean loss on a batch at ``theta + a d1 + b d2`` where each ``d`` is a Gaussian
  direction rescaled filter by filter to the norm of the corresponding filter of ``theta``
  (:func:`filter_normalized_direction`). The model is evaluated with
  ``torch.func.functional_call``, so its parameters are never written to: they are bit-exactly
  the same afterwards, exceptions included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from advlab.attacks._core import model_guard
from advlab.attacks.losses import LossFn, get_loss
from advlab.geometry._common import (
    check_batch,
    labels_or_predictions,
    orthonormal_pair,
    random_normal,
    unit,
)
from advlab.report.plotting import add_legend, new_figure, save_figure
from advlab.threat import per_sample_view

Direction = dict[str, Tensor]


def _as_axis(values: Sequence[float] | Tensor, name: str) -> Tensor:
    axis = torch.as_tensor(values, dtype=torch.float32).flatten()
    if axis.numel() == 0 or not bool(torch.isfinite(axis).all()):
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers")
    return axis


def _evaluate_points(model: nn.Module, points: Tensor, labels: Tensor, loss_fn: LossFn,
                     batch_size: int) -> tuple[Tensor, Tensor]:
    """Per-point loss and correctness ``(N,)`` without gradients, in batches."""
    losses, correct = [], []
    with torch.no_grad():
        for chunk, chunk_labels in zip(points.split(batch_size), labels.split(batch_size)):
            logits = model(chunk)
            losses.append(loss_fn(logits, chunk_labels))
            correct.append(logits.argmax(dim=1) == chunk_labels)
    return torch.cat(losses), torch.cat(correct)


def _plane_losses(model: nn.Module, x: Tensor, y: Tensor | None, u: Tensor, v: Tensor,
                  offsets1: Tensor, offsets2: Tensor, loss: str | LossFn,
                  batch_size: int) -> dict[str, Tensor]:
    """Per-sample loss and correctness at ``x + a u + b v`` over the grid: ``(Bb, A, B)`` each."""
    grid_b, grid_a = torch.meshgrid(offsets2, offsets1, indexing="ij")  # (Bb, A)
    shape = (*grid_a.shape, *([1] * x.dim()))
    points = x + grid_a.reshape(shape) * u + grid_b.reshape(shape) * v  # (Bb, A, B, ...)
    with model_guard(model):
        labels = labels_or_predictions(model, x, y)
        losses, correct = _evaluate_points(model, points.reshape(-1, *x.shape[1:]),
                                           labels.repeat(grid_a.numel()), get_loss(loss), batch_size)
    return {"offsets1": offsets1, "offsets2": offsets2, "loss": losses.reshape(*grid_a.shape, len(x)),
            "correct": correct.reshape(*grid_a.shape, len(x))}


def loss_line(model: nn.Module, x: Tensor, y: Tensor | None, direction: Tensor,
              offsets: Sequence[float] | Tensor, *, loss: str | LossFn = "ce",
              batch_size: int = 1024) -> dict[str, Tensor]:
    """Per-sample loss along ``x + a d / ||d||`` for each ``a`` in ``offsets``.

    ``x``: ``(B, ...)``; ``direction``: same shape; ``y``: ``(B,)`` or ``None`` (predictions).
    Returns dict: ``offsets`` ``(A,)``, ``loss`` ``(A, B)``, ``correct`` ``(A, B)`` bool.
    """
    check_batch(x, y)
    if direction.shape != x.shape:
        raise ValueError(f"direction must have the shape of x {tuple(x.shape)}, got {tuple(direction.shape)}")
    offsets = _as_axis(offsets, "offsets").to(x)
    zero = torch.zeros(1, dtype=x.dtype, device=x.device)
    line = _plane_losses(model, x, y, unit(direction), torch.zeros_like(x), offsets, zero, loss, batch_size)
    return {"offsets": offsets, "loss": line["loss"][0], "correct": line["correct"][0]}


def loss_surface(model: nn.Module, x: Tensor, y: Tensor | None, direction1: Tensor,
                 direction2: Tensor | None, offsets1: Sequence[float] | Tensor,
                 offsets2: Sequence[float] | Tensor, *, loss: str | LossFn = "ce",
                 generator: torch.Generator | None = None, batch_size: int = 1024) -> dict[str, Tensor]:
    """Per-sample loss over the plane ``x + a u + b v`` (``u``, ``v`` orthonormal per sample).

    ``u = direction1 / ||direction1||``; ``v`` is ``direction2`` (Gaussian from ``generator`` if
    ``None``) orthogonalised against ``u`` and normalised. Returns dict: ``offsets1`` ``(A,)``,
    ``offsets2`` ``(Bb,)``, ``loss`` ``(Bb, A, B)`` and ``correct`` ``(Bb, A, B)`` bool.
    """
    check_batch(x, y)
    if direction1.shape != x.shape:
        raise ValueError(f"direction1 must have the shape of x {tuple(x.shape)}, got {tuple(direction1.shape)}")
    offsets1, offsets2 = _as_axis(offsets1, "offsets1").to(x), _as_axis(offsets2, "offsets2").to(x)
    u, v = orthonormal_pair(direction1, direction2, generator=generator)
    return _plane_losses(model, x, y, u, v, offsets1, offsets2, loss, batch_size)


def filter_normalized_direction(model: nn.Module, *, generator: torch.Generator | None = None,
                                include_biases: bool = False) -> Direction:
    """A random direction in weight space, filter-normalised (Li et al. 2018).

    For each parameter with ``dim >= 2`` (conv kernels, linear weights) a Gaussian tensor is drawn
    and each filter ``d[i]`` (slice along the output axis 0: a conv filter or a neuron's weights)
    is rescaled to ``||theta[i]||``. One-dimensional parameters (biases, BatchNorm scales and
    shifts) get a zero direction, Li et al.'s default ("ignore biasbn"); with ``include_biases``
    they get a Gaussian direction scaled to the parameter's norm instead. Buffers (BatchNorm
    running statistics) are never part of the direction.

    Returns:
        ``{parameter name: direction tensor}`` for every parameter.
    """
    direction: Direction = {}
    for name, parameter in model.named_parameters():
        theta = parameter.detach()
        noise = random_normal(tuple(theta.shape), generator=generator, device=theta.device,
                              dtype=theta.dtype)
        if theta.dim() >= 2:
            filter_norms = theta.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
            direction[name] = noise * per_sample_view(filter_norms, theta)
        elif include_biases:
            direction[name] = noise * theta.norm() / noise.norm().clamp_min(1e-12)
        else:
            direction[name] = torch.zeros_like(theta)
    return direction


def _mean_loss_at(model: nn.Module, parameters: Direction, x: Tensor, labels: Tensor,
                  loss_fn: LossFn, batch_size: int) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` with ``parameters`` swapped in (functionally)."""
    total_loss, total_correct = 0.0, 0
    with torch.no_grad():
        for chunk, chunk_labels in zip(x.split(batch_size), labels.split(batch_size)):
            logits = functional_call(model, parameters, (chunk,), strict=False)
            total_loss += float(loss_fn(logits, chunk_labels).double().sum())
            total_correct += int((logits.argmax(dim=1) == chunk_labels).sum())
    return total_loss / len(x), total_correct / len(x)


def weight_landscape_2d(model: nn.Module, x: Tensor, y: Tensor, offsets1: Sequence[float] | Tensor,
                        offsets2: Sequence[float] | Tensor, *,
                        directions: tuple[Direction, Direction] | None = None,
                        loss: str | LossFn = "ce", generator: torch.Generator | None = None,
                        batch_size: int = 1024) -> dict[str, Any]:
    """Mean loss and accuracy on ``(x, y)`` at ``theta + a d1 + b d2`` (Li et al. 2018).

    ``directions`` default to two independent :func:`filter_normalized_direction` draws from
    ``generator``. The model runs in eval mode; its parameters are untouched.
    Returns dict: ``offsets1`` ``(A,)``, ``offsets2`` ``(Bb,)``, ``loss`` and ``accuracy`` ``(Bb, A)``.
    """
    check_batch(x, y)
    offsets1, offsets2 = _as_axis(offsets1, "offsets1"), _as_axis(offsets2, "offsets2")
    if directions is None:
        directions = (filter_normalized_direction(model, generator=generator),
                      filter_normalized_direction(model, generator=generator))
    first, second = directions
    loss_fn = get_loss(loss)
    losses = torch.zeros(len(offsets2), len(offsets1), dtype=torch.float64)
    accuracy = torch.zeros_like(losses)
    with model_guard(model):
        theta = {name: p.detach() for name, p in model.named_parameters()}
        for i, b in enumerate(offsets2.tolist()):
            for j, a in enumerate(offsets1.tolist()):
                moved = {name: value + a * first[name] + b * second[name] for name, value in theta.items()}
                losses[i, j], accuracy[i, j] = _mean_loss_at(model, moved, x, y, loss_fn, batch_size)
    return {"offsets1": offsets1, "offsets2": offsets2, "loss": losses, "accuracy": accuracy}


def weight_landscape_1d(model: nn.Module, x: Tensor, y: Tensor, offsets: Sequence[float] | Tensor, *,
                        direction: Direction | None = None, loss: str | LossFn = "ce",
                        generator: torch.Generator | None = None, batch_size: int = 1024) -> dict[str, Any]:
    """Mean loss and accuracy on ``(x, y)`` at ``theta + a d`` along one filter-normalised direction.

    Returns dict: ``offsets`` ``(A,)``, ``loss`` and ``accuracy`` ``(A,)``.
    """
    first = direction if direction is not None else filter_normalized_direction(model, generator=generator)
    zero = {name: torch.zeros_like(value) for name, value in first.items()}
    surface = weight_landscape_2d(model, x, y, offsets, [0.0], directions=(first, zero), loss=loss,
                                  batch_size=batch_size)
    return {"offsets": surface["offsets1"], "loss": surface["loss"][0], "accuracy": surface["accuracy"][0]}


def plot_loss_curves(curves: list[dict[str, Any]], labels: list[str], path: str | Path, *,
                     title: str = "Loss along a filter-normalised direction",
                     xlabel: str = "α (step along the direction)", ylabel: str = "mean loss",
                     log_scale: bool = False, colours: list[str] | None = None,
                     styles: list[str] | None = None) -> Path:
    """Overlay 1-D curves (from :func:`weight_landscape_1d` or :func:`loss_line`) of several models.

    A ``loss`` of shape ``(A, B)`` (per sample) is drawn as its median over the ``B`` samples with
    the 10-90 % band (the legend gives ``n``). ``colours``/``styles``: one colour (the run's, see
    :func:`advlab.report.plotting.colours_for`) and line style per curve.
    """
    if len(curves) != len(labels) or not curves:
        raise ValueError(f"need one label per curve, got {len(curves)} curves and {len(labels)} labels")
    colours = colours or [f"C{i % 10}" for i in range(len(curves))]
    styles = styles or ["-"] * len(curves)
    fig, ax = new_figure(width=5.6, height=4.0)
    for curve, label, colour, style in zip(curves, labels, colours, styles):
        values = curve["loss"].double().cpu()
        offsets = curve["offsets"].cpu().numpy()
        if values.dim() == 2:
            band = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=1)
            ax.fill_between(offsets, band[0].numpy(), band[2].numpy(), color=colour, alpha=0.15)
            label, values = f"{label} (median, 10-90 %, n={values.shape[1]})", band[1]
        ax.plot(offsets, values.numpy(), label=label, linewidth=1.6, color=colour, linestyle=style)
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if log_scale:
        ax.set_yscale("log")
    add_legend(ax)
    return save_figure(fig, path)


def draw_loss(ax: Any, values: Tensor, offsets1: Tensor, offsets2: Tensor, *, levels: int = 20,
              log_scale: bool | None = None) -> Any:
    """Filled contours of a loss grid ``(len(offsets2), len(offsets1))`` on ``ax``; the mappable.

    ``log_scale`` (default: whenever the loss is positive, as cross-entropy is) spaces the colour
    levels logarithmically (a symmetric-log scale when some values are not positive), so the basin
    stays readable next to steep walls."""
    import numpy as np
    from matplotlib.colors import LogNorm, SymLogNorm

    grid = values.double().cpu().numpy()
    a, b = offsets1.cpu().numpy(), offsets2.cpu().numpy()
    low, high = float(grid.min()), float(grid.max())
    if high <= low:
        high = low + max(abs(low), 1.0) * 1e-6
    if log_scale is None or log_scale:
        if low > 0:
            norm = LogNorm(low, high)
            spaced = np.geomspace(low, high * (1 + 1e-9), levels)
        else:
            linthresh = max(1e-3 * max(abs(low), abs(high)), 1e-12)
            norm = SymLogNorm(linthresh, vmin=low, vmax=high)
            spaced = norm.inverse(np.linspace(0.0, 1.0, levels))
        return ax.contourf(a, b, grid, levels=spaced, cmap="viridis", norm=norm)
    return ax.contourf(a, b, grid, levels=levels, cmap="viridis")


def loss_colorbar(fig: Any, filled: Any, ax: Any, *, label: str, ticks: int = 5, **kwargs: Any) -> Any:
    """A colour bar for :func:`draw_loss` with ``ticks`` readable labels (``%.2g``) spread over its
    range, geometrically on a log scale, instead of one label per contour level."""
    import numpy as np
    from matplotlib.colors import LogNorm

    bar = fig.colorbar(filled, ax=ax, label=label, **kwargs)
    low, high = filled.norm.vmin, filled.norm.vmax
    if low is None or high is None or not high > low:
        return bar
    spread = np.geomspace(low, high, ticks) if isinstance(filled.norm, LogNorm) else np.linspace(low, high, ticks)
    bar.set_ticks(spread, labels=[f"{value:.2g}" for value in spread])
    bar.minorticks_off()
    return bar


def plot_loss_surface(surface: dict[str, Any], path: str | Path, *,
                      title: str = "Loss surface", xlabel: str = "α (direction 1)",
                      ylabel: str = "β (direction 2)", levels: int = 20,
                      log_scale: bool | None = None) -> Path:
    """Filled contour plot of a 2-D landscape with labelled contour lines; the origin is marked.

    A per-sample ``loss`` ``(Bb, A, B)`` (from :func:`loss_surface`) is averaged over samples.
    The colour scale is logarithmic for a positive loss (symmetric-log otherwise) unless
    ``log_scale=False`` (:func:`draw_loss`).
    """
    values = surface["loss"].double()
    values = values.mean(dim=2) if values.dim() == 3 else values
    fig, ax = new_figure(width=5.4, height=4.4)
    filled = draw_loss(ax, values, surface["offsets1"], surface["offsets2"], levels=levels,
                       log_scale=log_scale)
    lines = ax.contour(surface["offsets1"].cpu().numpy(), surface["offsets2"].cpu().numpy(),
                       values.cpu().numpy(), levels=filled.levels[::4], colors="white", linewidths=0.6)
    ax.clabel(lines, fontsize=7, fmt="%.2g")
    ax.plot([0.0], [0.0], marker="*", color="red", markersize=12)
    logarithmic = log_scale is not False
    loss_colorbar(fig, filled, ax, label="loss (log scale)" if logarithmic else "loss")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return save_figure(fig, path)
