"""The command line through typer's test runner (and once as a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values

runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, expand_multi_values(list(args)), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_dir = root / "digits-mlp"
    result = invoke("train", "--dataset", "digits", "--model", "mlp", "--epochs", "3",
                    "--lr", "0.01", "--out", str(run_dir), "--no-progress")
    assert result.exit_code == 0, result.output
    return run_dir


def test_expand_multi_values():
    assert expand_multi_values(["evaluate", "r", "--eps", "0.1", "0.2", "--n", "5"]) == [
        "evaluate", "r", "--eps", "0.1", "--eps", "0.2", "--n", "5"]
    assert expand_multi_values(["attack", "--eps", "0.1", "runs/x"]) == ["attack", "--eps", "0.1", "runs/x"]


def test_info_lists_datasets_models_attacks_defenses(tmp_path):
    from advlab.training import OBJECTIVES

    result = invoke("info", "--out", str(tmp_path))
    assert result.exit_code == 0
    for word in ("digits", "small_cnn", "random_relu", "apgd", "deepfool"):
        assert word in result.output
    defenses = result.output.split("defenses")[1]
    for name in ("none", "fgsm-mix", "pgd-at", "fgsm-rs", "trades", "cure", "clip", "noise"):
        line = next(line for line in defenses.splitlines() if line.split()[:1] == [name])
        assert OBJECTIVES.metadata(name)["description"] in line  # one line per defense


def test_train_writes_run_and_store(trained_run):
    summary = json.loads((trained_run / "train_result.json").read_text())
    assert summary["test_acc"] > 0.8
    assert (trained_run / "model.safetensors").exists()
    assert (trained_run.parent / "advlab.db").exists()


def test_evaluate_table_and_records(trained_run):
    result = invoke("evaluate", str(trained_run), "--eps", "0.02", "0.1", "--preset", "fast",
                    "--n", "40", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "robust" in result.output and "apgd-ce" in result.output
    records = json.loads((trained_run / "evaluate-linf-fast.json").read_text())
    assert [r["eps"] for r in records] == [0.02, 0.1]
    assert records[0]["robust_accuracy"] >= records[1]["robust_accuracy"]

    from advlab.store import Store

    with Store(trained_run.parent / "advlab.db") as store:
        stored = store.get_evaluations(trained_run.name, kind="evaluate")
    assert len(stored) == 2


@pytest.mark.parametrize("name, extra", [("pgd", ["--param", "steps=5"]), ("deepfool", [])])
def test_attack_saves_examples(trained_run, tmp_path, name, extra):
    out = tmp_path / f"{name}.npz"
    result = invoke("attack", str(trained_run), "--attack", name, "--eps", "0.1", "--n", "32",
                    "--out", str(out), *extra)
    assert result.exit_code == 0, result.output
    assert "success_rate" in result.output
    arrays = np.load(out)
    assert arrays["x_adv"].shape == arrays["x"].shape == (32, 1, 8, 8)
    assert arrays["x_adv"].min() >= 0 and arrays["x_adv"].max() <= 1


@pytest.mark.parametrize("args, match", [
    (["train", "--dataset", "imagenet", "--epochs", "1"], "unknown dataset"),
    (["attack", "RUN", "--attack", "nonsense"], "unknown attack"),
    (["evaluate", "does/not/exist"], "does not exist"),
    (["attack", "RUN", "--param", "steps"], "key=value"),
    (["demo", "--dataset", "imagenet"], "the demo runs on"),
    (["report", "OUT"], "no results store"),
])
def test_user_errors_are_one_clear_line(trained_run, tmp_path, args, match):
    args = [str(trained_run) if a == "RUN" else str(tmp_path) if a == "OUT" else a for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "x")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert match in result.output.lower() or match in (result.stderr or "").lower()


def test_python_dash_m_advlab_runs():
    done = subprocess.run([sys.executable, "-m", "advlab", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "evaluate" in done.stdout


@pytest.mark.parametrize("args,code,text", [(["info"], 0, "advlab "), (["attack", "--bogus"], 2, "No such option")])
@pytest.mark.parametrize("world_size", ["1", "2"])
def test_main_under_torchrun_skips_finalisation_keeps_output_and_status(
        args: list[str], code: int, text: str, world_size: str) -> None:
    """With WORLD_SIZE > 1 the entry point leaves through os._exit, so the interpreter's
    finalisation (where Gloo's threads can abort the process) never runs: atexit handlers are
    skipped, yet everything printed arrives and the command's exit status is kept."""
    import os

    script = ("import atexit, sys; atexit.register(print, 'FINALISED'); "
              f"from advlab.cli import main; main({args!r})")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "WORLD_SIZE": world_size},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert text in done.stdout + done.stderr
    assert ("FINALISED" in done.stdout) == (world_size == "1")
