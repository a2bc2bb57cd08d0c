"""Figures of the statistics-aware geometry: eigenvalue profile bands, the linear noise reference.

* :func:`plot_profile_bands`: for each model the median over points of the ``k``-th eigenvalue
  against ``k``, with the 10-90 % band, pointwise and at scale ``h`` side by side (Fawzi et al.
  2018's slide "Eigenvalue profile, original vs adversarial"); symlog y-axis (eigenvalues of
  either sign), one colour per model.
* :func:`linear_noise_reference`: the exact distribution of the random-direction / minimal
  distance ratio for a *linear* classifier in ``d`` dimensions: along a uniform unit direction
  ``u`` the boundary is at ``r / |u_1|``, so the per-point ratio (median over ``k`` directions)
  is the median of ``1 / |u_1|``. Its median and 10-90 % band are the reference for
  :func:`advlab.geometry.analysis_plots.plot_noise_ratios` (not ``sqrt(d)``, about 1.5x too low
  for single directions: the median of ``1/|N(0,1)|`` is about ``1.48``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from advlab.geometry.scale import eigenvalue_profile
from advlab.report.plotting import colours_for, new_figure, save_figure


def linear_noise_reference(dim: int, *, directions: int = 10, points: int = 4000,
                           generator: torch.Generator | None = None) -> dict[str, float]:
    """Median and 10 % / 90 % quantiles of the linear classifier's noise ratio (Monte Carlo).

    Per simulated point the median over ``directions`` uniform unit directions of
    ``1 / |u_1|`` (exact for a hyperplane without the box); ``points`` simulated points.
    """
    if dim < 1 or directions < 1:
        raise ValueError(f"dim and directions must be positive, got {dim} and {directions}")
    gaussian = torch.randn(points, directions, dim, generator=generator, dtype=torch.float64)
    cosine = gaussian[..., 0].abs() / gaussian.norm(dim=2)  # (P, k)
    ratio = torch.quantile(1.0 / cosine.clamp_min(1e-12), 0.5, dim=1)  # (P,)
    low, mid, high = torch.quantile(ratio, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"median": mid, "low": low, "high": high, "directions": directions, "dim": dim}


def plot_profile_bands(profiles: dict[str, dict[str, Tensor]], path: str | Path, *,
                       h: float, title: str = "Input-Hessian eigenvalue profile",
                       colours: dict[str, str] | None = None) -> Path:
    """``profiles[label][kind]`` ``(P, k)`` eigenvalues per point, ``kind`` in ``("pointwise",
    "scale")``; one panel per kind, median line and 10-90 % band per model, symlog y-axis.
    ``colours``: label -> colour (default :func:`advlab.report.plotting.colours_for`)."""
    kinds = [kind for kind in ("pointwise", "scale") if any(kind in p for p in profiles.values())]
    palette = colours or colours_for(profiles)
    fig, axes = new_figure(len(kinds), width=4.6, height=3.8, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for label, by_kind in profiles.items():
            if kind not in by_kind:
                continue
            values = by_kind[kind].detach().double().cpu().sort(dim=1, descending=True).values
            band = eigenvalue_profile(values)
            rank = torch.arange(1, values.shape[1] + 1).numpy()
            colour = palette[label]
            ax.plot(rank, band["median"].numpy(), color=colour, lw=1.8, label=f"{label}: median, 10-90 % (n={len(values)})")
            ax.fill_between(rank, band["low"].numpy(), band["high"].numpy(), color=colour, alpha=0.2)
        scale = max(float(p[kind].abs().max()) for p in profiles.values() if kind in p)
        ax.set_yscale("symlog", linthresh=max(scale * 1e-4, 1e-12))
        ax.set(xlabel="rank k", ylabel="λ_k",
               title="pointwise Hessian" if kind == "pointwise" else f"at scale h = {h:g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
