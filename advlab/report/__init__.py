"""Figures and the self-contained HTML report built from the results store."""

from advlab.report.build import build_report

__all__ = ["build_report"]
