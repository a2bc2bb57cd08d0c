"""The one figure helper of the package: a matplotlib ``Figure`` on the Agg canvas, and saving it.

Built without ``pyplot``, so no global backend is switched and nothing is left open: a figure is
garbage-collected once saved. Used by the report and by the geometry plots (report sits below
geometry, so geometry may import it; this module imports nothing from advlab).

Readability is handled here once for every figure: constrained layout, titles wrapped to the
width they have (:func:`fit_titles`), crowded x tick labels rotated or thinned
(:func:`declutter_ticks`), legends placed by :func:`add_legend`, and one colour per run name
across all charts (:func:`run_colours`; :func:`colours_for` gives the geometry figures the same
colours from the store's run names, :func:`report_run_names`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Resolution of every saved PNG.
DPI = 110

#: Legends with more entries than this go below the panels, as one figure legend.
LEGEND_INSIDE_MAX = 6


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


def run_colours(names: Iterable[str]) -> dict[str, str]:
    """A stable colour per run: the sorted distinct names take matplotlib's ``tab10`` cycle in order
    (``tab20`` from 11 names on, repeating beyond 20), as hex strings.

    Every report chart is given the same full list of run names, so one run keeps one colour in
    all of them, whichever runs a particular chart has data for.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    ordered = sorted(set(names), key=str)
    cmap = colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {name: to_hex(cmap(i % cmap.N)) for i, name in enumerate(ordered)}


def colours_for(labels: Iterable[str], names: Iterable[str] = ()) -> dict[str, str]:
    """The colour of each of ``labels`` as the report draws it when its runs are ``names``.

    Labels among ``names`` get :func:`run_colours` ``(names)`` (so a geometry figure drawn with
    the store's run names agrees with every report chart); the others take the palette's unused
    colours in sorted order, so they never shift the colours of the runs. Without ``names`` this
    is ``run_colours(labels)``. Returns ``{label: hex colour}`` in the order of ``labels``.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    labels, names = list(labels), list(names)
    known = run_colours(names) if names else {}
    if not known:
        known = run_colours(labels)
    extra = sorted({label for label in labels if label not in known}, key=str)
    if extra:
        cmap = colormaps["tab10" if len(known) + len(extra) <= 10 else "tab20"]
        free = [c for c in (to_hex(cmap(i)) for i in range(cmap.N)) if c not in known.values()]
        free = free or [to_hex(cmap(i)) for i in range(cmap.N)]
        known = {**known, **{label: free[i % len(free)] for i, label in enumerate(extra)}}
    return {label: known[label] for label in labels}


def report_run_names(store: Any) -> list[str]:
    """The run names the report gives its charts (:func:`run_colours`): the runs of the store,
    then the runs of its ``evaluate`` and ``minimal-norm`` records (an :class:`advlab.store.Store`)."""
    names = [run["name"] for run in store.list_runs()]
    names += [record["run_name"] or "model" for record in store.get_evaluations(kind="evaluate")]
    return names + [record["run_name"] for record in store.get_evaluations(kind="minimal-norm")]


def run_colour(name: str, names: Iterable[str]) -> str:
    """The colour of run ``name`` among ``names`` (see :func:`run_colours`); ``name`` is added if absent."""
    return run_colours([*names, name])[name]


def add_legend(ax: Any, *, fontsize: float = 8, **kwargs: Any) -> Any:
    """A small-font legend: inside (``loc="best"``) for up to :data:`LEGEND_INSIDE_MAX` entries;
    beyond that one figure legend below all panels (constrained layout makes room for it, in as
    many columns as the labels fit), drawn once even when called for every panel.
    Returns the legend, or ``None`` when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if len(handles) <= LEGEND_INSIDE_MAX:
        return ax.legend(handles, labels, fontsize=fontsize, **{"loc": "best", **kwargs})
    fig = ax.figure
    for legend in fig.legends:
        if [t.get_text() for t in legend.get_texts()] == labels:
            return legend
    label_inches = max(len(label) for label in labels) * fontsize * 0.6 / 72 + 0.6
    ncols = max(1, min(len(labels), int(fig.get_figwidth() / label_inches)))
    return fig.legend(handles, labels, fontsize=fontsize, loc="outside lower center", ncols=ncols)


def wrap(text: str, width: int) -> str:
    """``text`` wrapped at ``width`` characters (existing line breaks kept)."""
    return "\n".join(textwrap.fill(line, max(int(width), 8)) for line in text.split("\n"))


def _fit_text(artist: Any, available: float, renderer: Any) -> None:
    """Rewrap ``artist``'s text so that its rendered width fits ``available`` pixels."""
    text = artist.get_text()
    if not text or not artist.get_visible():
        return
    for _ in range(4):  # characters are not of equal width: shrink until it fits
        width = artist.get_window_extent(renderer).width
        if width <= available:
            return
        longest = max(len(line) for line in text.split("\n"))
        text = wrap(" ".join(text.split()), int(longest * available / width) - 1)
        artist.set_text(text)


def fit_titles(fig: Any) -> None:
    """Wrap every axes title (no wider than 88 % of its grid cell, nor than the room either side of the
    axes centre) and the suptitle (no wider
    than the figure), so that constrained layout can then make room for their height."""
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        spec = ax.get_subplotspec()  # the grid cell: constrained layout may have shrunk the axes
        span = (spec.colspan.stop - spec.colspan.start) / spec.get_gridspec().ncols if spec else 1.0
        cell = 0.88 * span * fig.bbox.width  # a gap to the neighbouring panel's title
        extent = ax.get_window_extent(renderer)
        centre = extent.x0 + extent.width / 2
        room = 2 * min(centre - fig.bbox.x0, fig.bbox.x1 - centre)  # a title is centred on its axes
        available = 0.95 * min(cell, max(room, 0.3 * cell))
        for title in (ax.title, ax._left_title, ax._right_title):
            _fit_text(title, available, renderer)
    if fig._suptitle is not None:
        _fit_text(fig._suptitle, 0.95 * fig.bbox.width, renderer)


def _overlapping(labels: Sequence[Any], renderer: Any) -> bool:
    boxes = sorted((t.get_window_extent(renderer) for t in labels if t.get_visible() and t.get_text()),
                   key=lambda b: b.x0)
    return any(a.x1 + 2 > b.x0 for a, b in zip(boxes, boxes[1:]))


def declutter_ticks(fig: Any) -> None:
    """Make x tick labels that overlap each other readable: first drop the minor labels (log
    axes label 2x10^0, 3x10^0, ... between the decades), then rotate the major ones by 30
    degrees, and thin them (fewer ticks) when they still overlap after rotation."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        minor = ax.xaxis.get_ticklabels(minor=True)
        if not _overlapping([*ax.get_xticklabels(), *minor], renderer):
            continue
        if any(t.get_text() for t in minor):
            ax.xaxis.set_minor_formatter(NullFormatter())
            fig.canvas.draw()
            if not _overlapping(ax.get_xticklabels(), renderer):
                continue
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        fig.canvas.draw()
        if _overlapping(ax.get_xticklabels(), renderer) and ax.get_xscale() == "linear":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG at :data:`DPI` (creating the folder), release it, and return the path.

    Before saving, titles are wrapped to fit (:func:`fit_titles`) and crowded tick labels are
    rotated or thinned (:func:`declutter_ticks`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy_figure(fig)
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def tidy_figure(fig: Any) -> None:
    """Wrap titles and declutter tick labels of ``fig``, laid out as it will be saved."""
    fig.set_dpi(DPI)
    for _ in range(2):  # wrapping changes the layout, which changes the room: twice is enough
        fig.canvas.draw()
        fit_titles(fig)
    fig.canvas.draw()
    declutter_ticks(fig)
