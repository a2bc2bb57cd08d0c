"""Report sections of the statistics-aware geometry: the paired comparison and the reproductions.

* :func:`comparison_section`: the rows of the latest two-model ``geometry`` record (ratio of the
  second model to the first, 95 % paired bootstrap interval, n, verdict);
* :func:`reproduce_section`: every ``reproduce`` record: the published claim, the measured value
  with its interval and n, the verdict, and its figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advlab.report.html import image, paragraph, table

VERDICTS = {True: "supports the claim", False: "contradicts the claim", None: "does not decide"}


def comparison_section(records: list[dict[str, Any]]) -> str:
    """HTML of the latest geometry record's ``comparison`` rows ("" when there is none)."""
    paired = [r for r in records if isinstance(r["result"].get("comparison"), dict) and r["result"]["comparison"]]
    if not paired:
        return ""
    result = paired[-1]["result"]
    first, second = result["models"]
    rows = [[name, row.get("a_median"), row.get("b_median"), row.get("ratio"),
             f"[{_num(row['ci'][0])}, {_num(row['ci'][1])}]", row.get("n"), row.get("verdict")]
            for name, row in result["comparison"].items()]
    points = (result.get("params") or {}).get("comparison", {}).get("points", len(result.get("indices", [])))
    return paragraph(f"{second} against {first} on {points} test points: the median over the points both "
                     "classify correctly of the per-point ratio, with its 95 % paired bootstrap interval; "
                     "a difference is named only when the interval excludes 1.") + table(
        ["quantity", f"{first} median", f"{second} median", "ratio", "95 % CI", "n", "verdict"], rows)


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "n/a"


def reproduce_section(records: list[dict[str, Any]]) -> str:
    """HTML of the ``reproduce`` records: claim vs measurement table, then the figures."""
    if not records:
        return ""
    latest = {r["result"]["name"]: r for r in records}  # the last run of each name
    rows = [[name, r["result"]["claim"], r["result"]["measured"], VERDICTS[r["result"].get("agrees")]]
            for name, r in latest.items()]
    parts = [table(["result", "published", "measured (95 % CI, n)", "verdict"], rows)]
    for name, record in latest.items():
        result = record["result"]
        base = Path(result.get("out_dir") or ".")
        for figure, rel in (result.get("figures") or {}).items():
            path = base / rel
            if path.exists():
                parts.append(image(path, f"{name}: " + (result.get("captions") or {}).get(figure, figure)))
    return "".join(parts)
