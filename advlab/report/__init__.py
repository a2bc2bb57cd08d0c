"""Figures and the self-contained HTML report built from the results store.

``build_report`` is imported on first use, so that :mod:`advlab.report.plotting` (the figure
helper the geometry plots share) can be imported without the report's builder and matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from advlab.report.build import build_report

        return build_report
    raise AttributeError(f"module 'advlab.report' has no attribute {name!r}")
