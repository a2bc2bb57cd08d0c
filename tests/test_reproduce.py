"""``advlab reproduce`` on a cache of tiny pre-trained digits models (seconds, no training)."""

from __future__ import annotations

import json

import pytest
import typer
from harness import trained_mlp
from typer.testing import CliRunner

from advlab.cli.reproduce import reproduce
from advlab.experiments.reproduce import REPRODUCTIONS
from advlab.models import save_model

app = typer.Typer()
app.command("reproduce")(reproduce)
app.command("noop")(lambda: None)
runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    save_model(trained_mlp("digits", (32,), 30, 0.0, 0), root / "models" / "digits-small_cnn-none-s0", dataset="digits")
    save_model(trained_mlp("digits", (32,), 20, 1e-2, 1), root / "models" / "digits-small_cnn-fgsm-rs-s0", dataset="digits")
    return root


def test_list_names_the_results():
    result = runner.invoke(app, ["reproduce", "--list"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in ("goodfellow-fgsm-training", "fawzi-boundaries", "fawzi-landscape", "curvature-profile",
                 "cure-bounds", "deepfool-rho", "noise-ratio", "random-relu", "spirals",
                 "perceptual-gradients", "capacity"):
        assert name in result.output and name in REPRODUCTIONS


@pytest.mark.parametrize("name", ["fawzi-landscape", "cure-bounds", "curvature-profile", "perceptual-gradients"])
def test_reproduction_prints_claim_and_interval(cache, name):
    out = cache / name
    result = runner.invoke(app, ["reproduce", name, "--out", str(out), "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "published:" in result.output and "measured:" in result.output and "verdict:" in result.output
    assert "n = " in result.output
    saved = json.loads((out / f"{name}.json").read_text())
    assert saved["n"] > 0 and len(saved["ci"]) == 2 and saved["claim"]
    for figure in saved["figures"].values():
        assert (out / figure).exists()


def test_unknown_reproduction_is_a_clear_error():
    result = runner.invoke(app, ["reproduce", "fawzi-everything"])
    assert result.exit_code != 0 and "unknown reproduction" in result.output


def test_report_has_a_section_for_reproductions(cache, tmp_path):
    from advlab.report import build_report

    name = "deepfool-rho"
    result = runner.invoke(app, ["reproduce", name, "--out", str(cache / name), "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = build_report(cache / "advlab.db", tmp_path / "report.html")
    text = report.read_text()
    assert ">Reproduced results</h2>" in text and "rho_adv" in text


def test_capacity_quick_trains_caches_and_reuses_its_cells(tmp_path, monkeypatch):
    """``reproduce capacity --quick`` end to end, on a smaller grid (1 epoch, 300 digits, 60 points)."""
    import dataclasses

    from advlab.experiments import reproduce_capacity

    study = reproduce_capacity._study

    def smaller(cache, *, seed, quick):
        config, grid = study(cache, seed=seed, quick=quick)
        assert quick and config.dataset == "digits" and grid["model_keys"] == ["x1", "x2"]
        return dataclasses.replace(config, n_train=300, adv_val_n=50), {**grid, "epochs": [1], "n_test": 60}

    monkeypatch.setattr(reproduce_capacity, "_study", smaller)
    out = tmp_path / "capacity"
    result = runner.invoke(app, ["reproduce", "capacity", "--out", str(out), "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "published:" in result.output and "x2 - x1" in result.output and "n = 60" in result.output
    saved = json.loads((out / "capacity.json").read_text())
    assert saved["n"] == 60 and len(saved["ci"]) == 2 and saved["agrees"] in (True, False, None)
    assert (out / saved["figures"]["frontier"]).exists()
    row, = saved["details"]["differences"]
    assert (row["defense"], row["epochs"], row["wide"], row["narrow"]) == ("fgsm-rs", 1, "x2", "x1")
    cells = sorted((tmp_path / "models" / "capacity-quick").glob("*/cell.json"))
    assert [c.parent.name for c in cells] == ["digits-x1-fgsm-rs-1ep-lr0.01", "digits-x2-fgsm-rs-1ep-lr0.01"]
    stamps = [c.stat().st_mtime_ns for c in cells]
    again = runner.invoke(app, ["reproduce", "capacity", "--out", str(out), "--quick"], catch_exceptions=False)
    assert again.exit_code == 0 and json.loads((out / "capacity.json").read_text())["value"] == saved["value"]
    assert [c.stat().st_mtime_ns for c in cells] == stamps  # reused, not retrained
