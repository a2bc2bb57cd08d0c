"""``advlab geometry`` and ``advlab theory`` through typer's runner, on tiny digits/moons models."""

from __future__ import annotations

import json
import math

import pytest
import torch
import typer
from harness import trained_mlp
from torch import nn
from typer.testing import CliRunner

from advlab.cli.geometry import geometry
from advlab.cli.theory import theory_app
from advlab.geometry.analysis import analyse
from advlab.models import save_model
from advlab.store import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Registered the way advlab.cli registers them.
app = typer.Typer()
app.command("geometry")(geometry)
app.add_typer(theory_app, name="theory")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    save_model(trained_mlp("digits", (32,), 60, 0.0, 0), root / "standard", dataset="digits")
    save_model(trained_mlp("digits", (32,), 30, 1e-2, 1), root / "smooth", dataset="digits")
    save_model(trained_mlp("moons", (16,), 100, 0.0, 0), root / "moons", dataset="moons")
    return root


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000, path


def test_geometry_compare_writes_summary_figures_and_store(runs):
    result = invoke("geometry", str(runs / "standard"), "--compare", str(runs / "smooth"),
                    "--points", "3", "--eigs", "5", "--directions", "3", "--compare-points", "20",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert "standard" in result.output and "smooth" in result.output and "DeepFool" in result.output
    out = runs / "standard" / "geometry"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("models", "per_sample", "aggregates", "curves", "figures", "captions", "skipped",
                "comparison", "timings", "indices", "labels"):
        assert key in summary
    assert summary["models"] == ["standard", "smooth"] and summary["input_dim"] == 64
    assert len(summary["indices"]) == len(summary["labels"]) == 3
    for label in summary["models"]:
        per = summary["per_sample"][label]
        for key in ("deepfool_norm", "boundary_curvature", "top_eigenvalue", "hutchinson_frobenius",
                    "cure_curvature", "bound_lower", "bound_upper", "noise_ratio", "subspace_ratio_m4",
                    "subspace_ratio_m16", "correct"):
            assert len(per[key]) == 3, key
        assert all(len(row) == 5 for row in per["top_eigenvalues"])
        assert all(n is not None and 0 < n < 8 for n in per["deepfool_norm"])  # correct points, found
        aggregates = summary["aggregates"][label]
        assert aggregates["sqrt_d"] == 8.0 and aggregates["median_deepfool_norm"] > 0
        # digits: 64 dimensions, so the full spectrum is there; sum(lambda^2) = ||H||_F^2 > 0
        spectrum = summary["curves"]["hessian_spectrum"][label]
        assert len(spectrum["eigenvalues"]) == 3 and len(spectrum["eigenvalues"][0]) == 64
        assert min(spectrum["frobenius_exact"]) > 0
    assert set(summary["comparison"]) >= {"minimal_l2", "top_eigenvalue", "noise_ratio"}
    for row in summary["comparison"].values():
        assert {"ratio", "ci", "n", "verdict"} <= set(row) and len(row["ci"]) == 2
    assert summary["params"]["comparison"]["points"] == 20
    assert set(summary["figures"]) == set(summary["captions"])
    for name in ("cross_section_0", "input_loss_lines", "weight_landscape_1d", "hessian_eigenvalues",
                 "curvature_bounds", "noise_ratio", "input_loss_surface_smooth", "weight_landscape_2d_standard"):
        assert name in summary["figures"]
    for relative in summary["figures"].values():
        assert_png(out / relative)
    with Store(runs / "advlab.db") as store:
        records = store.get_evaluations("standard", kind="geometry")
    assert records and records[-1]["result"]["models"] == ["standard", "smooth"]


def test_report_shows_the_paired_comparison(runs, tmp_path):
    from advlab.report import build_report

    if not (runs / "advlab.db").exists():  # the comparison test stores the record
        test_geometry_compare_writes_summary_figures_and_store(runs)
    text = build_report(runs / "advlab.db", tmp_path / "report.html").read_text()
    assert ">Geometry: paired comparison</h2>" in text and "95 % CI" in text


def test_geometry_on_2d_data_draws_decision_regions(runs, tmp_path):
    result = invoke("geometry", str(runs / "moons"), "--points", "2", "--eigs", "2",
                    "--directions", "2", "--out", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "decision_regions_moons" in summary["figures"]
    assert_png(tmp_path / summary["figures"]["decision_regions_moons"])
    assert "cross_section_figures" in summary["skipped"] and "subspace_ratios" in summary["skipped"]
    assert not any(name.startswith("cross_section_") for name in summary["figures"])
    assert len(summary["per_sample"]["moons"]["boundary_curvature"]) == 2


@pytest.mark.parametrize("args, match", [
    (["missing"], "does not exist"),
    (["standard", "--compare", "moons"], "same dataset"),
])
def test_geometry_errors_are_clear(runs, args, match):
    paths = [str(runs / a) if a in ("missing", "standard", "moons") else a for a in args]
    result = runner.invoke(app, ["geometry", *paths, "--no-progress"])
    assert result.exit_code == 2
    assert match in result.output
    assert "Traceback" not in result.output


def test_analyse_rejects_bad_inputs(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="one or two"):
        analyse({"a": model, "b": model, "c": model}, x, y, tmp_path)
    with pytest.raises(ValueError, match="only 4 inputs"):
        analyse({"a": model}, x, y, tmp_path, points=5)


def test_analyse_one_smooth_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(dim=1)
    summary = analyse({"a/b": model}, x, y, tmp_path, points=2, eigs=3, directions=2,
                      subspace_dims=(1, 4), generator=torch.Generator().manual_seed(0))
    assert summary.comparison == {} and summary.indices == [0, 1]
    assert summary.figures["input_loss_surface_a/b"] == "input_loss_surface_a_b.png"
    assert "subspace_m1" in summary.skipped and len(summary.per_sample["a/b"]["subspace_ratio_m4"]) == 2
    # tanh: a full-rank Hessian; Hutchinson's estimate is close to the exact sum of lambda^2
    exact = summary.curves["hessian_spectrum"]["a/b"]["frobenius_exact"]
    estimate = summary.per_sample["a/b"]["hutchinson_frobenius"]
    assert torch.allclose(estimate.double(), exact, rtol=0.5)
    top = summary.per_sample["a/b"]["top_eigenvalues"][:, 0].double()
    spectrum = summary.curves["hessian_spectrum"]["a/b"]["eigenvalues"].double()
    assert torch.allclose(top.abs(), spectrum.abs().amax(dim=1), rtol=1e-3)
    assert json.loads((tmp_path / "summary.json").read_text())["models"] == ["a/b"]


def test_theory_random_relu_quick(tmp_path):
    out = tmp_path / "theory"
    result = invoke("theory", "random-relu", "--quick", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "supports" in result.output and "flip rate" in result.output
    data = json.loads((out / "random_relu.json").read_text())
    assert len(data["rows"]) == 2 * 3 * 3 and data["claims"]
    assert all(0.0 <= row["flip_rate"] <= 1.0 and math.isfinite(row["scaled_step_median"]) for row in data["rows"])
    assert_png(out / "random_relu.png")
    with Store(tmp_path / "advlab.db") as store:
        assert store.get_evaluations(kind="theory-random-relu")


def test_theory_spirals_with_label_noise(tmp_path):
    out = tmp_path / "spirals"
    result = invoke("theory", "spirals", "--label-noise", "0.1", "--epochs", "40", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "spirals.json").read_text())
    assert data["params"]["label_noise"] == 0.1
    # the default MLPs 2 -> 16 -> 2 and 2 -> 256 -> 256 -> 2, with biases
    assert data["small"]["parameters"] == 2 * 16 + 16 + 16 * 2 + 2
    assert data["large"]["parameters"] == 2 * 256 + 256 + 2 * (256 * 256 + 256) + 256 * 2 + 2  # 3 x 256
    assert [data[name]["widths"] for name in ("small", "large")] == [[16], [256, 256, 256]]
    assert f"{data['large']['parameters']:>10}" in result.output  # the printed table
    assert set(data["figures"]) == {"landscape_1d", "regions_small", "regions_large",
                                    "landscape_2d_small", "landscape_2d_large"}
    for name in data["figures"].values():
        assert_png(out / name)


def test_geometry_on_a_torchscript_model_of_the_users(runs, tmp_path):
    """Any MODEL form works in ``advlab geometry``: here a TorchScript file with --dataset."""
    import warnings

    model = trained_mlp("moons", (16,), 100, 0.0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13
        torch.jit.save(torch.jit.trace(model, torch.rand(2, 2)), str(tmp_path / "moons.pt"))
        result = invoke("geometry", str(tmp_path / "moons.pt"), "--dataset", "moons",
                        "--points", "2", "--eigs", "2", "--directions", "2",
                        "--out", str(tmp_path / "geometry"), "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "geometry" / "summary.json").read_text())
    assert len(next(iter(summary["per_sample"].values()))["boundary_curvature"]) == 2
