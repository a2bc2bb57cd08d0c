"""The report's certification section: certified next to empirical robust accuracy per radius.

Reads the store records of ``advlab certify`` (kinds ``certify-smoothing`` and ``certify-ibp``,
see :mod:`advlab.certify.compare`): a certificate is a lower bound and an attack an upper bound
on robust accuracy, so the certified column must never exceed the empirical one.
"""

from __future__ import annotations

from typing import Any

from advlab.report.html import paragraph, table

KINDS = ("certify-smoothing", "certify-ibp")


def _interval(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return (f"{entry['accuracy']:.1%} [{entry['low']:.3f}, {entry['high']:.3f}] "
            f"({entry['correct']}/{entry['total']})")


def certify_section(by_kind: dict[str, list[dict[str, Any]]]) -> str:
    """HTML of the certification records in ``by_kind`` (kind -> store records); '' if none."""
    rows, broken = [], []
    for kind in KINDS:
        for record in by_kind.get(kind, []):
            result = record["result"]
            method = result.get("method", kind.removeprefix("certify-"))
            setting = (f"sigma={result.get('sigma')}, N={result.get('n')}" if method == "smoothing"
                       else f"preset {result.get('preset')}")
            for row in result.get("rows", []):
                rows.append([record["run_name"] or "model", method, "L2" if method == "smoothing" else "Linf",
                             row["radius"], setting, _interval(row["certified"]), _interval(row["empirical"])])
                cert, emp = row["certified"], row["empirical"]
                if row.get("certified_but_broken") or (emp and cert["correct"] > emp["correct"]):
                    broken.append(f"{record['run_name']} {method} r={row['radius']:g}")
    if not rows:
        return ""
    html = table(["model", "method", "norm", "radius", "settings", "certified (95 % CI)",
                  "empirical robust (95 % CI)"], rows)
    html += paragraph("Certified accuracy is a lower bound on robust accuracy (randomized smoothing, "
                      "Cohen et al. 2019: of the smoothed classifier; IBP, Gowal et al. 2018: of the "
                      "model itself); the empirical robust accuracy of the attacks is an upper bound.")
    if broken:
        html += paragraph("Suspicious: more points certified than survive the attacks at "
                          + "; ".join(broken) + ". Do not trust these certificates.")
    return html
