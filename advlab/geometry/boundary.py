"""Decision-boundary cross-sections: the classifier restricted to a 2-D plane through a point.

Fawzi, Moosavi-Dezfooli, Frossard & Soatto (2018), "Empirical study of the topology and geometry
of deep networks" (CVPR): in the plane ``x0 + a u + b v`` spanned by an adversarial direction
``u`` (DeepFool's perturbation or the loss gradient) and a random direction ``v``, the boundary
lies close to ``x0`` along ``u`` and is nearly flat (or gently curved) along random directions.

Convention: ``predictions[i, j]`` and ``margins[i, j]`` are at ``x0 + offsets1[j] u + offsets2[i] v``
(rows follow ``v``, columns follow ``u``, so ``imshow`` puts ``u`` on the horizontal axis).
Points outside the input box are *classified as they are* (not clamped: clamping would bend the
plane) and flagged in ``inside_box``; the plots outline the valid part of the plane.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard, predict
from advlab.attacks.losses import margin
from advlab.geometry._common import check_batch, grid_axis, orthonormal_pair
from advlab.geometry.hessian import input_gradient
from advlab.report.plotting import new_figure, save_figure
from advlab.threat import flat, per_sample_view


def adversarial_direction(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                          method: str = "deepfool") -> Tensor:
    """A direction towards the boundary for each sample, ``(B, ...)``.

    ``"deepfool"``: DeepFool's L2 perturbation ``x_adv - x`` (Moosavi-Dezfooli et al. 2016), whose
    norm is the distance to the boundary it found; samples where DeepFool fails (or that are
    already misclassified) fall back to the cross-entropy gradient. ``"gradient"``: the gradient.
    """
    if method not in ("deepfool", "gradient"):
        raise ValueError(f"method must be 'deepfool' or 'gradient', got {method!r}")
    gradient = input_gradient(model, x, y)
    if method == "gradient":
        return gradient
    from advlab.attacks.deepfool import deepfool

    with model_guard(model):
        labels = y if y is not None else predict(model, x).argmax(dim=1)
    x_adv = cast(Tensor, deepfool(model, x, labels, norm="l2"))  # no return_info: a tensor
    perturbation = x_adv - x  # (B, ...)
    found = flat(perturbation).norm(dim=1) > 0
    return torch.where(per_sample_view(found, x), perturbation, gradient)


def cross_section(model: nn.Module, x0: Tensor, direction1: Tensor, direction2: Tensor | None = None,
                  *, extent: float = 1.0, resolution: int = 101, bounds: tuple[float, float] = (0.0, 1.0),
                  generator: torch.Generator | None = None, batch_size: int = 1024) -> dict[str, Any]:
    """Classify the grid ``x0 + a u + b v``, ``a, b in [-extent, extent]`` (L2 units of the input).

    Args:
        model: classifier returning logits ``(N, K)``.
        x0: one point, shape ``(C, H, W)`` (any shape without the batch axis).
        direction1: ``u`` before normalisation, same shape (e.g. a DeepFool perturbation).
        direction2: ``v`` before orthogonalisation against ``u``; ``None`` draws a Gaussian one.
        extent: half-width of the square in input units. resolution: ``R`` points per axis (odd
            puts ``x0`` exactly on the centre cell).
        bounds: the input box, only used for ``inside_box``.
        generator: draws ``direction2`` when it is ``None``.
        batch_size: grid points per forward pass.

    Returns:
        dict with ``predictions`` ``(R, R)`` int64, ``margins`` ``(R, R)`` (logit of the centre's
        class minus the largest other; the boundary of that class is the 0 level), ``inside_box``
        ``(R, R)`` bool, ``offsets1``/``offsets2`` ``(R,)``, ``label`` (class of ``x0``), ``u``, ``v``
        (unit directions shaped like ``x0``), ``extent``.
    """
    check_batch(x0.unsqueeze(0))
    if direction1.shape != x0.shape:
        raise ValueError(f"direction1 must have the shape of x0 {tuple(x0.shape)}, got {tuple(direction1.shape)}")
    second = None if direction2 is None else direction2.unsqueeze(0)
    u, v = orthonormal_pair(direction1.unsqueeze(0), second, generator=generator)  # (1, ...) each
    offsets1 = grid_axis(extent, resolution).to(x0.device, x0.dtype)
    offsets2 = offsets1.clone()
    grid_b, grid_a = torch.meshgrid(offsets2, offsets1, indexing="ij")  # (R, R)
    shape = (-1, *([1] * x0.dim()))
    points = x0.unsqueeze(0) + grid_a.reshape(shape) * u + grid_b.reshape(shape) * v  # (R*R, ...)
    with model_guard(model):
        label = int(predict(model, x0.unsqueeze(0)).argmax(dim=1))
        logits = predict(model, points, batch_size=batch_size)  # (R*R, K)
    labels = torch.full((len(points),), label, dtype=torch.long, device=logits.device)
    low, high = bounds
    inside = (flat(points).amin(dim=1) >= low) & (flat(points).amax(dim=1) <= high)
    return {
        "predictions": logits.argmax(dim=1).reshape(resolution, resolution),
        "margins": margin(logits, labels).reshape(resolution, resolution),
        "inside_box": inside.reshape(resolution, resolution),
        "offsets1": offsets1, "offsets2": offsets2, "label": label,
        "u": u[0], "v": v[0], "extent": float(extent),
    }


def boundary_profile(section: dict[str, Any], window: float | None = None) -> tuple[Tensor, Tensor]:
    """Where the boundary crosses each line ``b = const`` on the positive ``u`` side.

    For each offset ``b`` in ``offsets2`` with ``|b| <= window`` (default ``extent / 2``), the first ``a > 0``
    where the margin of the centre's class changes sign, linearly interpolated between grid
    points. Returns ``(offsets2, crossings)`` for the lines that cross (``(n,)`` each).
    """
    margins, offsets1, offsets2 = section["margins"].double(), section["offsets1"].double(), section["offsets2"].double()
    window = section["extent"] / 2 if window is None else window
    start = int(torch.argmin(offsets1.abs()))
    found_b, found_a = [], []
    for i in torch.nonzero(offsets2.abs() <= window + 1e-12).flatten().tolist():
        row = margins[i, start:]
        negative = torch.nonzero(row <= 0).flatten()
        if len(negative) == 0 or negative[0] == 0:
            continue
        j = int(negative[0]) + start
        m0, m1 = float(margins[i, j - 1]), float(margins[i, j])
        a0, a1 = float(offsets1[j - 1]), float(offsets1[j])
        found_b.append(float(offsets2[i]))
        found_a.append(a0 + (a1 - a0) * m0 / (m0 - m1))
    return torch.tensor(found_b, dtype=torch.float64), torch.tensor(found_a, dtype=torch.float64)


def boundary_curvature(section: dict[str, Any], window: float | None = None) -> float:
    """Signed curvature of the boundary curve at the crossing of the ``u``-axis (1 / input units).

    Fits ``a*(b) = a0 + e b + c b^2`` to :func:`boundary_profile` by least squares and returns the
    curvature of that graph at ``b = 0``: ``kappa = 2c / (1 + e^2)^(3/2)``. ``kappa > 0``: the
    boundary bends away from ``x0`` (the adversarial side is locally convex); ``kappa < 0``: it
    bends around ``x0``; ``0``: flat (Fawzi et al. 2018 find ``|kappa| a0`` small along random
    directions). ``nan`` with fewer than 3 crossings in the window.
    """
    offsets2, crossings = boundary_profile(section, window)
    if len(offsets2) < 3:
        return math.nan
    _, slope, quadratic = quadratic_fit(offsets2, crossings)
    return 2.0 * quadratic / (1.0 + slope**2) ** 1.5


def quadratic_fit(b: Tensor, a: Tensor) -> tuple[float, float, float]:
    """Least-squares ``(a0, e, c)`` of ``a = a0 + e b + c b^2`` for ``b``, ``a`` ``(n,)``, ``n >= 3``.

    Solved in Python floats (normal equations in ``t = b / max|b|``, exactly rounded sums, Cramer's
    rule on the 3 x 3 system), so the result depends only on the values: LAPACK's least squares
    (``torch.linalg.lstsq`` through MKL) can round differently with the memory alignment of its
    inputs, which would make per-point curvatures differ between otherwise identical runs.
    """
    bs, values = [float(v) for v in b.tolist()], [float(v) for v in a.tolist()]
    scale = max(abs(v) for v in bs) or 1.0
    ts = [v / scale for v in bs]
    moments = [math.fsum(t**k for t in ts) for k in range(5)]
    rhs = [math.fsum(v * t**k for t, v in zip(ts, values)) for k in range(3)]
    gram = [[moments[i + j] for j in range(3)] for i in range(3)]
    det = _det3(gram)
    if det == 0.0 or not math.isfinite(det):
        return math.nan, math.nan, math.nan
    solution = []
    for k in range(3):
        replaced = [[rhs[i] if j == k else gram[i][j] for j in range(3)] for i in range(3)]
        solution.append(_det3(replaced) / det)
    return solution[0], solution[1] / scale, solution[2] / scale**2


def _det3(m: list[list[float]]) -> float:
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def section_curvature(section: dict[str, Any]) -> tuple[float, float]:
    """``(curvature, crossing)``: the boundary's distance along ``u`` nearest the ``u`` axis and
    its curvature fitted over ``|beta| <=`` that distance (at least 3 grid steps); ``nan`` if the
    boundary does not cross the positive ``u`` side of the section."""
    offsets, crossings = boundary_profile(section, window=section["extent"])
    if len(offsets) == 0:
        return math.nan, math.nan
    crossing = float(crossings[int(offsets.abs().argmin())])
    step = float(section["offsets1"][1] - section["offsets1"][0])
    return boundary_curvature(section, window=max(crossing, 3 * step)), crossing


def plot_cross_sections(sections: list[dict[str, Any]], titles: list[str], path: str | Path, *,
                        xlabel: str | list[str] = "α along the adversarial direction u",
                        ylabel: str = "β along a random direction v",
                        boxes: list[dict[str, Any]] | None = None) -> Path:
    """Draw cross-sections side by side with one class colour map.

    The point ``x0`` is a white star, the boundary of its class a black line, and the part of
    the plane inside the input box (often only a sliver around the ``u`` axis for images) is
    outlined with a dashed white line: the exact polygon when ``boxes`` gives one
    :func:`advlab.geometry.box.box_section` per section, else the grid's ``inside_box``.
    ``xlabel`` may give one label per section.
    """
    from matplotlib.colors import ListedColormap

    if len(sections) != len(titles) or not sections:
        raise ValueError(f"need one title per section, got {len(sections)} sections and {len(titles)} titles")
    xlabels = [xlabel] * len(sections) if isinstance(xlabel, str) else list(xlabel)
    classes = max(int(s["predictions"].max()) for s in sections) + 1
    colours = ListedColormap([f"C{i % 10}" for i in range(max(classes, 2))])
    fig, axes = new_figure(ncols=len(sections))
    axes = [axes] if len(sections) == 1 else list(axes)
    for index, (ax, section, title, label) in enumerate(zip(axes, sections, titles, xlabels)):
        extent = section["extent"]
        box = (-extent, extent, -extent, extent)
        image = ax.imshow(section["predictions"].cpu().numpy(), origin="lower", extent=box,
                          cmap=colours, vmin=-0.5, vmax=colours.N - 0.5, interpolation="nearest")
        offsets1, offsets2 = section["offsets1"].cpu().numpy(), section["offsets2"].cpu().numpy()
        ax.contour(offsets1, offsets2, section["margins"].cpu().numpy(), levels=[0.0], colors="black",
                   linewidths=1.2)
        if boxes is not None:
            draw_box(ax, boxes[index])
        else:
            inside = section["inside_box"].float().cpu().numpy()
            if 0 < inside.sum() < inside.size:
                ax.contour(offsets1, offsets2, inside, levels=[0.5], colors="white", linestyles="--",
                           linewidths=1.0)
        ax.plot([0.0], [0.0], marker="*", color="white", markeredgecolor="black", markersize=13)
        ax.set(title=title, xlabel=label, ylabel=ylabel)
    fig.colorbar(image, ax=axes, ticks=range(colours.N), label="predicted class", shrink=0.8)
    return save_figure(fig, path)


def draw_box(ax: Any, box: dict[str, Any]) -> None:
    """Outline a :func:`advlab.geometry.box.box_section` polygon on ``ax`` (dashed white); a box
    met only in a segment or at the point is drawn as that segment (or a white ring)."""
    vertices = box["vertices"].cpu().numpy()
    if len(vertices) == 0:
        return
    if box["fraction"] >= 1e-4:
        closed = list(vertices) + [vertices[0]]
        ax.plot([v[0] for v in closed], [v[1] for v in closed], color="white", linestyle="--",
                linewidth=1.2, label="[0, 1] box")
    else:
        ax.plot(vertices[:, 0], vertices[:, 1], color="white", linestyle="--", linewidth=1.2,
                marker="o", markersize=9, markerfacecolor="none", label="[0, 1] box (degenerate)")


def decision_regions_2d(model: nn.Module, x_train: Tensor, y_train: Tensor, path: str | Path, *,
                        resolution: int = 200, title: str = "Decision regions and training points",
                        bounds: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Colour the plane ``[bounds]^2`` by the predicted class and overlay the training points.

    For 2-D data (``spirals``, ``moons``): ``x_train`` is ``(N, 2)``, ``y_train`` ``(N,)``.
    """
    from matplotlib.colors import ListedColormap

    if x_train.dim() != 2 or x_train.shape[1] != 2:
        raise ValueError(f"decision_regions_2d needs 2-D inputs (N, 2), got {tuple(x_train.shape)}")
    low, high = bounds
    axis = torch.linspace(low, high, resolution, dtype=x_train.dtype)
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1).to(x_train.device)
    with model_guard(model):
        predictions = predict(model, points).argmax(dim=1).reshape(resolution, resolution).cpu()
    classes = max(int(predictions.max()), int(y_train.max())) + 1
    colours = ListedColormap([f"C{i % 10}" for i in range(classes)])
    fig, ax = new_figure(width=5.2, height=4.8)
    ax.imshow(predictions.numpy(), origin="lower", extent=(low, high, low, high), cmap=colours,
              vmin=-0.5, vmax=classes - 0.5, alpha=0.35, interpolation="nearest")
    ax.scatter(*x_train.cpu().numpy().T, c=y_train.cpu().numpy(), cmap=colours, vmin=-0.5,
               vmax=classes - 0.5, s=9, edgecolors="black", linewidths=0.3)
    ax.set(title=title, xlabel="x₁", ylabel="x₂", xlim=(low, high), ylim=(low, high))
    return save_figure(fig, path)
