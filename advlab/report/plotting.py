"""The one figure helper of the package: a matplotlib ``Figure`` on the Agg canvas, and saving it.

Built without ``pyplot``, so no global backend is switched and nothing is left open: a figure is
garbage-collected once saved. Used by the report and by the geometry plots (report sits below
geometry, so geometry may import it; this module imports nothing from advlab).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Resolution of every saved PNG.
DPI = 110


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.6, height: float = 4.0,
               squeeze: bool = True) -> tuple[Any, Any]:
    """A ``Figure`` with ``nrows x ncols`` axes of ``width x height`` inches each (constrained layout).

    Returns ``(fig, axes)``: with ``squeeze`` (default) ``axes`` is a 1-D array in row order, or a
    single axes for a 1x1 grid; with ``squeeze=False`` the ``(nrows, ncols)`` array.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if not squeeze:
        return fig, axes
    axes = axes.ravel()
    return fig, (axes[0] if axes.size == 1 else axes)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG at :data:`DPI` (creating the folder), release it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path
