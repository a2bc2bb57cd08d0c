"""``advlab report``: one self-contained HTML file from the results store of a runs directory.

    advlab report runs/ --out report.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advlab.cli._common import echo, runs_root, setup_logging


def report(
    runs: Annotated[Path | None, typer.Argument(help="Runs directory holding advlab.db (default $ADVLAB_RUNS or ./runs).")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default <runs>/report.html).")] = None,
    title: Annotated[str, typer.Option(help="Title of the page.")] = "advlab robustness report",
) -> None:
    """Build the HTML report (figures inline, no network, readable without JavaScript)."""
    setup_logging()
    from advlab.report import build_report

    root = runs_root(runs)
    store = root if root.suffix == ".db" else root / "advlab.db"
    target = build_report(store, out or store.parent / "report.html", title=title)
    echo(f"report: {target}", bold=True)
