"""Tiny HTML building blocks for the self-contained report: escaped text, tables, inline images.

Everything is inline (CSS in a ``<style>`` tag, PNGs as base64 ``data:`` URIs), so the file
opens anywhere without a network or JavaScript. Table sorting is a progressive enhancement: a
few lines of optional script; without it the tables are still plain, readable HTML.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:1100px;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{font-size:1.9rem;margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.3rem;margin-top:2.5rem}
nav{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1.2rem;margin:1rem 0}
nav ol{margin:.3rem 0;padding-left:1.3rem;columns:2}
table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem;background:#fff}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right}
th{background:#eef1f4;cursor:pointer}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f6f8fa}
figure{margin:1rem 0;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:.88rem;color:#57606a;margin-top:.4rem;max-width:1000px}
.flag{background:#fff8c5;border-left:4px solid #d4a72c;padding:.5rem .8rem;margin:.5rem 0}
.headline{display:flex;gap:1rem;flex-wrap:wrap}.headline div{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.7rem 1rem;min-width:14rem}
.headline b{display:block;font-size:1.6rem}.muted{color:#57606a;font-size:.9rem}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),i=Array.prototype.indexOf.call(th.parentNode.children,th),b=t.tBodies[0],
r=Array.prototype.slice.call(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
r.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,c=y.cells[i].dataset.v||y.cells[i].textContent,
n=parseFloat(a),m=parseFloat(c);var k=(!isNaN(n)&&!isNaN(m))?n-m:a.localeCompare(c);return asc?k:-k});
r.forEach(function(row){b.appendChild(row)})})});
"""


def esc(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def slug(text: str) -> str:
    """An id for an anchor: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def fmt(value: Any, percent: bool = False) -> str:
    """Numbers formatted for a table (percentages, 4 significant digits), others as text."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "–"
        return f"{100 * value:.1f}%" if percent else (f"{value:.4g}" if isinstance(value, float) else str(value))
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], percent_columns: Sequence[int] = ()) -> str:
    """A sortable HTML table; numeric cells carry their raw value for sorting."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            raw = f' data-v="{esc(value)}"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            cells.append(f"<td{raw}>{esc(fmt(value, i in percent_columns))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def image(path: str | Path, caption: str, alt: str | None = None) -> str:
    """A figure with the PNG inlined as base64 (no external files)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt or caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def paragraph(text: str, cls: str | None = None) -> str:
    return f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{esc(text)}</p>'


def page(title: str, subtitle: str, headline: str, sections: list[tuple[str, str]]) -> str:
    """The whole document: title, headline numbers, table of contents, sections."""
    toc = "".join(f'<li><a href="#{slug(name)}">{esc(name)}</a></li>' for name, _ in sections)
    body = "".join(f'<section id="{slug(name)}"><h2>{esc(name)}</h2>{content}</section>'
                   for name, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><main><h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p>{headline}'
            f'<nav><b>Contents</b><ol>{toc}</ol></nav>{body}</main><script>{SORT_SCRIPT}</script></body></html>')
