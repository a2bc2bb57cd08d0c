"""Work is never lost: finished runs are not overwritten, one writer per run directory,
--resume reads the stored arguments, Ctrl-C says how to resume, corrupt checkpoints are named."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.training import fit
from advlab.training.checkpoint import CheckpointError, load_checkpoint
from advlab.training.run_files import RunExistsError, RunLockedError, run_lock

runner = CliRunner()
TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--lr", "0.01",
         "--n-train", "400", "--no-progress"]


def invoke(*args):
    return runner.invoke(app, expand_multi_values([str(a) for a in args]))


def _files(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "base"
    result = invoke(*TRAIN, "--out", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def test_a_finished_run_is_not_overwritten(finished):
    before = _files(finished)
    result = invoke(*TRAIN, "--seed", "1", "--out", finished)
    assert result.exit_code == 2
    assert "already holds a finished run; nothing was changed" in result.output
    assert "--force" in result.output
    assert _files(finished) == before  # byte-identical


def test_force_replaces_the_run_and_its_store_records(tmp_path):
    from advlab.store import Store

    run_dir = tmp_path / "r"
    assert invoke(*TRAIN, "--epochs", "1", "--out", run_dir).exit_code == 0
    (run_dir / "evaluate-linf-fast.json").write_text("[]")
    with Store(tmp_path / "advlab.db") as store:
        store.add_evaluation("r", "evaluate", {"eps": 0.1}, {"robust_accuracy": 0.5})
    result = invoke(*TRAIN, "--epochs", "1", "--seed", "3", "--out", run_dir, "--force")
    assert result.exit_code == 0, result.output
    assert not (run_dir / "evaluate-linf-fast.json").exists()
    with Store(tmp_path / "advlab.db") as store:
        kinds = [e["kind"] for e in store.get_evaluations("r")]
    assert kinds == ["clean-accuracy"]  # the old run's evaluations are gone with it
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 3


def test_fit_refuses_an_existing_run_dir_too(tmp_path):
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    fit(_mlp(), (x, y), epochs=1, progress=False, run_dir=tmp_path)
    before = _files(tmp_path)
    with pytest.raises(RunExistsError, match="already holds a finished run"):
        fit(_mlp(), (x, y), epochs=1, progress=False, run_dir=tmp_path)
    assert _files(tmp_path) == before
    fit(_mlp(), (x, y), epochs=1, progress=False, run_dir=tmp_path, overwrite=True)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_path.joinpath(".advlab.lock").write_text(json.dumps(
            {"pid": holder.pid, "host": os.uname().nodename, "started": 0}))
        with pytest.raises(RunLockedError, match=rf"another process \(pid {holder.pid}"):
            fit(_mlp(), (x, y), epochs=1, progress=False, run_dir=tmp_path)
        assert not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    fit(_mlp(), (x, y), epochs=1, progress=False, run_dir=tmp_path)  # the holder is dead
    assert not (tmp_path / ".advlab.lock").exists()
    with run_lock(tmp_path), run_lock(tmp_path):  # re-entrant within one process
        assert (tmp_path / ".advlab.lock").exists()


def test_cli_resume_with_only_out_continues_exactly(tmp_path, monkeypatch):
    """Interrupted in epoch 2 (Ctrl-C), resumed with `--resume --out` alone: the same weights
    as the uninterrupted run."""
    from safetensors.torch import load_file

    from advlab.training import loop

    args = [*TRAIN, "--checkpoint-every", "3", "--val-fraction", "0.2"]
    assert invoke(*args, "--out", tmp_path / "reference").exit_code == 0
    calls = {"n": 0}
    original = loop.Trainer._train_step if hasattr(loop.Trainer, "_train_step") else None
    if original is None:
        pytest.skip("the training loop has no _train_step to interrupt")

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 batches of 128 per epoch: epoch 2, second batch
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(loop.Trainer, "_train_step", interrupted)
    result = invoke(*args, "--out", tmp_path / "run")
    assert result.exit_code == 130
    assert f"advlab train --resume --out {tmp_path / 'run'}" in result.output
    monkeypatch.setattr(loop.Trainer, "_train_step", original)
    result = invoke("train", "--resume", "--out", tmp_path / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    want = load_file(tmp_path / "reference" / "model.safetensors")
    got = load_file(tmp_path / "run" / "model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)
    refused = invoke("train", "--resume", "--out", tmp_path / "run", "--lr", "0.5")
    assert refused.exit_code == 2 and "lr: the run has 0.01, given 0.5" in refused.output


def test_resume_without_a_run_says_so(tmp_path):
    result = invoke("train", "--resume", "--out", tmp_path / "nothing")
    assert result.exit_code == 2 and "holds no run to resume" in result.output


class _Foreign:
    pass


@pytest.mark.parametrize("kind, match", [
    ("pickled", r"checkpoint.pt is not an advlab checkpoint \(it holds pickled Python objects"),
    ("truncated", r"checkpoint.pt is not an advlab checkpoint \(truncated or corrupt"),
    ("foreign", r"checkpoint.pt is not an advlab checkpoint \(it holds format None"),
    ("text", r"checkpoint.pt is not an advlab checkpoint \(not a torch.save file"),
])
def test_corrupt_or_foreign_checkpoints_are_named(tmp_path, kind, match):
    path = tmp_path / "checkpoint.pt"
    if kind == "pickled":
        torch.save({"thing": _Foreign()}, path)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    elif kind == "text":
        path.write_text("hello")
    else:
        torch.save({"format": 1, "weights": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_cli_resume_of_a_corrupt_checkpoint_is_one_line(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir)
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    result = invoke("train", "--resume", "--out", run_dir, "--no-progress")
    assert result.exit_code == 2
    assert "checkpoint.pt is not an advlab checkpoint (truncated or corrupt" in result.output
    assert "Traceback" not in result.output


def test_every_defense_default_is_in_the_help_and_fgsm_rs_eps_is_printed(tmp_path, caplog):
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", invoke("train", "--help").output).split())
    assert "fgsm-rs (" in text and "eps=0.3" in text.split("fgsm-rs (")[1][:400]
    for name in ("pgd-at (", "trades (", "fgsm-mix (", "cure (", "clip (", "noise ("):
        assert name in text
    with caplog.at_level("INFO", logger="advlab"):
        result = invoke(*TRAIN, "--epochs", "1", "--defense", "fgsm-rs", "--adv-val-n", "20",
                        "--out", tmp_path / "rs")
    assert result.exit_code == 0, result.output
    assert "defense fgsm-rs:" in caplog.text and "eps=0.3 (default)" in caplog.text
