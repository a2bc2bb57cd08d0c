"""The README's Python API example runs as written (on fewer points and epochs, for speed)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs(tmp_path, monkeypatch):
    code = _api_example()
    assert "target=" in code and "targeted=" not in code
    small = code.replace("epochs=5", "epochs=1").replace("[:256]", "[:24]")
    small = small.replace('"runs/digits-cnn"', repr(str(tmp_path / "digits-cnn")))
    assert small != code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(small, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    info, result = namespace["info"], namespace["result"]
    assert info.norm.shape == (24,) and info.success.dtype == torch.bool
    assert result.verdict == "reliable" or result.verdict.startswith("suspicious: ")
    assert len(namespace["curve"]) == 3
