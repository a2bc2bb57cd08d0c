"""``advlab demo --quick`` end to end, and its report rendered in a real browser (Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser import chromium, load_stats, screenshot
from typer.testing import CliRunner

from advlab.cli import app

ARTIFACTS = Path(os.environ.get("ADVLAB_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(root), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root, result.output


@pytest.mark.timeout(600)
def test_quick_demo_prints_report_and_headline(quick_demo):
    root, output = quick_demo
    report = root / "report.html"
    assert report.exists() and f"report: {report.resolve()}" in output
    for label in ("fooling is easy", "defending is hard", "geometry changes"):
        assert label in output
    assert output.count("n = ") >= 3 and "95 % CI" in output  # headline numbers carry n and intervals
    text = report.read_text()
    for section in ("Robustness curves", "Adversarial examples", "Universal perturbation",
                    "Decision boundaries", "Curvature", "Minimal perturbations"):
        assert f">{section}</h2>" in text, section


def test_quick_demo_reuses_trained_runs(quick_demo, capsys):
    from advlab.cli.demo import PLANS, _train_models

    root, output = quick_demo
    assert output.count("test acc   ") == 2  # the first demo trained both models
    runs = [root / name for name in ("demo-digits-standard", "demo-digits-fgsm-rs")]
    before = {path: (path / "model.safetensors").read_bytes() for path in runs}
    stamps = {path: (path / "train_result.json").stat().st_mtime_ns for path in runs}
    assert _train_models(PLANS["digits"], root, False, "cpu", 0, False) == tuple(runs)
    printed = capsys.readouterr().out
    assert "test acc   " not in printed and printed.count("test accuracy") == 2  # read, not retrained
    for path in runs:
        assert (path / "model.safetensors").read_bytes() == before[path]
        assert (path / "train_result.json").stat().st_mtime_ns == stamps[path]


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(quick_demo):
    root, _ = quick_demo
    report = root / "report.html"
    stats = load_stats(report)
    assert stats["images"] >= 8, stats
    assert stats["broken"] == 0, stats
    assert stats["sections"] >= 8, stats
    shot = screenshot(report, ARTIFACTS / "report-screenshot.png")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    shutil.copy(report, ARTIFACTS / "report.html")
