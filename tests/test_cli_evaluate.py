"""``advlab evaluate`` ends its table with the verdict of the evaluation."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.models import create_model, save_model


def test_evaluate_prints_the_verdict(tmp_path, monkeypatch):
    """An untrained model is at chance level: the verdict names the raised flag."""
    monkeypatch.setenv("ADVLAB_RUNS", str(tmp_path))
    run_dir = tmp_path / "untrained"
    save_model(create_model("mlp", 10, (1, 8, 8), seed=0), run_dir, dataset="digits")
    args = ["evaluate", "--model-file", str(run_dir), "--dataset", "digits", "--eps", "0.05",
            "--preset", "fast", "--n", "24", "--no-progress", "--out", str(tmp_path / "e.json")]
    result = CliRunner().invoke(app, expand_multi_values(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "e.json").read_text())
    codes = [w["code"] for w in records[0]["warnings"]]
    assert "chance_accuracy" in codes
    verdict = [line for line in result.output.splitlines() if line.startswith("verdict: ")]
    assert verdict == ["verdict: suspicious: " + ", ".join(dict.fromkeys(codes))]
    assert result.output.strip().splitlines()[-1] == verdict[0]  # the last line


def test_evaluate_rejects_a_bad_bpda_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_RUNS", str(tmp_path))
    run_dir = tmp_path / "untrained"
    save_model(create_model("mlp", 10, (1, 8, 8), seed=0), run_dir, dataset="digits")
    args = ["evaluate", "--model-file", str(run_dir), "--dataset", "digits", "--bpda", "maybe",
            "--no-progress"]
    result = CliRunner().invoke(app, expand_multi_values(args))
    assert result.exit_code != 0 and "--bpda must be auto, on or off" in result.output
