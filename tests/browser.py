"""Render an HTML file in headless Chromium: a screenshot, and a DOM dump after load in which an
injected probe records how many images loaded and how many are broken."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic"]

PROBE = """<script>window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-broken', String(broken.length));
  document.body.setAttribute('data-sections', String(document.querySelectorAll('section').length));
});</script>"""


def chromium() -> str | None:
    """Path of Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 4000) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _run([f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars",
                 html.resolve().as_uri()])
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {done.stderr[-2000:]}")
    return png


def load_stats(html: Path) -> dict[str, int]:
    """Images, broken images and sections counted by the probe in a copy of the page."""
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
        done = _run(["--dump-dom", "--virtual-time-budget=15000", probed.as_uri()])
    body = re.search(r"<body([^>]*)>", done.stdout)
    if body is None:
        raise RuntimeError(f"no DOM dumped: {done.stderr[-2000:]}")
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    return {key: int(value) for key, value in attrs.items()}
