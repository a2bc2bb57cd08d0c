"""Long commands show a progress bar with a total (and so an ETA): attack, certify, evaluate."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.models import create_model, save_model

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, expand_multi_values([str(a) for a in args]), env=env)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    save_model(create_model("mlp", 10, (1, 8, 8), seed=0), root / "mlp", dataset="digits")
    return root


@pytest.mark.parametrize("attack, extra", [("pgd", ["--param", "steps=2"]), ("deepfool", []),
                                           ("universal", [])])
def test_attack_runs_in_batches_with_a_total(saved, attack, extra):
    out = saved / f"{attack}.npz"
    result = invoke("attack", saved / "mlp", "--dataset", "digits", "--attack", attack, "--eps",
                    "0.1", "--n", "20", "--batch-size", "8", "--out", out, *extra,
                    env={"ADVLAB_RUNS": str(saved / "runs")})
    assert result.exit_code == 0, result.output
    assert "0/20 [" in result.output  # the bar has a total, so an ETA
    arrays = np.load(out)
    assert arrays["x_adv"].shape == (20, 1, 8, 8)
    if attack != "deepfool":
        assert np.abs(arrays["x_adv"] - arrays["x"]).max() <= 0.1 + 1e-6


def test_attack_refuses_a_bad_batch_size(saved):
    result = invoke("attack", saved / "mlp", "--dataset", "digits", "--batch-size", "0")
    assert result.exit_code == 2 and "--batch-size must be >= 1" in result.output


def test_evaluate_bar_has_a_total(saved):
    result = invoke("evaluate", saved / "mlp", "--dataset", "digits", "--eps", "0.05",
                    "--preset", "fast", "--n", "12", env={"ADVLAB_RUNS": str(saved / "runs")})
    assert result.exit_code == 0, result.output
    assert "/12" in result.output
