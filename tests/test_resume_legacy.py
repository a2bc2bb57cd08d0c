"""``advlab train --resume --out DIR`` alone: after a SIGKILL of the command, and for a run
written by advlab 0.1 (its config has no ``train_args``: the arguments are read from what it
stored; what it does not record is named)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from harness import ROOT, sigkill_after_epoch
from safetensors.torch import load_file
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.training.checkpoint import load_checkpoint, save_checkpoint

runner = CliRunner()

TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--lr", "0.01",
         "--n-train", "400", "--val-fraction", "0.2", "--checkpoint-every", "2",
         "--defense", "fgsm-mix", "--eps", "0.1", "--adv-val-n", "20", "--no-progress"]


def invoke(*args):
    return runner.invoke(app, expand_multi_values([str(a) for a in args]))


def _same_weights(run_a, run_b) -> None:
    want, got = load_file(run_a / "model.safetensors"), load_file(run_b / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = invoke(*TRAIN, "--out", run)
    assert result.exit_code == 0, result.output
    return run


def _interrupted(run, monkeypatch, at: int = 5) -> None:
    """A run stopped by Ctrl-C in its second epoch (3 batches of 128 per epoch)."""
    from advlab.training import loop

    original, calls = loop.Trainer._train_step, {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(loop.Trainer, "_train_step", step)
    assert invoke(*TRAIN, "--out", run).exit_code == 130
    monkeypatch.setattr(loop.Trainer, "_train_step", original)


def _as_written_by_0_1(run, drop: tuple[str, ...] = ()) -> None:
    """Rewrite config.json and the checkpoint's config as advlab 0.1 wrote them: no
    train_args, dataset_options, test_split (added in 0.2), version 0.1.0; ``drop`` more keys."""
    def old(config: dict) -> dict:
        removed = {"train_args", "dataset_options", "test_split", *drop}
        return {**{k: v for k, v in config.items() if k not in removed}, "advlab_version": "0.1.0"}

    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(old(config), indent=2, sort_keys=True))
    state = load_checkpoint(run / "checkpoint.pt")
    save_checkpoint(run / "checkpoint.pt", {**state, "config": old(state["config"])})


def test_a_0_1_run_resumes_with_only_out(reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupted(run, monkeypatch)
    _as_written_by_0_1(run)
    result = invoke("train", "--resume", "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    _same_weights(reference, run)
    config = json.loads((run / "config.json").read_text())
    assert config["train_args"]["defense_params"] == {"eps": 0.1}  # the run is 0.2 from now on
    refused = invoke("train", "--resume", "--out", run, "--lr", "0.5")
    assert refused.exit_code == 2 and "lr: the run has 0.01, given 0.5" in refused.output


def test_a_0_1_run_without_config_json_resumes_from_its_checkpoint(reference, tmp_path,
                                                                    monkeypatch):
    run = tmp_path / "run"
    _interrupted(run, monkeypatch)
    _as_written_by_0_1(run)
    (run / "config.json").unlink()
    result = invoke("train", "--resume", "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    _same_weights(reference, run)


def test_what_a_0_1_run_does_not_record_is_named(reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupted(run, monkeypatch)
    _as_written_by_0_1(run, drop=("lr", "objective", "defense"))
    result = invoke("train", "--resume", "--out", run, "--no-progress")
    assert result.exit_code == 2
    assert "does not record defense, defense_params, lr" in result.output
    assert "--defense" in result.output and "--lr" in result.output
    result = invoke("train", "--resume", "--out", run, "--lr", "0.01", "--defense", "fgsm-mix",
                    "--eps", "0.1", "--no-progress")
    assert result.exit_code == 0, result.output
    _same_weights(reference, run)


def test_resume_after_sigkill_of_the_command_with_only_out(reference, tmp_path):
    """`advlab train` killed (SIGKILL) after a mid-run checkpoint; `--resume --out` alone
    reaches the uninterrupted run's weights."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen([sys.executable, "-m", "advlab", *TRAIN, "--out", str(run)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = run / "checkpoint.pt"
    if sigkill_after_epoch(victim, path, timeout=120) != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed")
    assert load_checkpoint(path)["epoch"] < 3
    result = invoke("train", "--resume", "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    _same_weights(reference, run)
