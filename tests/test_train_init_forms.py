"""``advlab train --init MODEL`` for every model form ``evaluate`` takes, and the fine-tuned run
loaded afterwards by every command with no extra options."""

from __future__ import annotations

import json

import pytest
import torch
from harness import user_model_forms
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.models import load_any_model, load_model, save_model

runner = CliRunner()

MODULE = '''
import torch
from torch import nn


class Out:  # a Hugging-Face-style output object
    def __init__(self, logits):
        self.logits = logits


class Net(nn.Module):
    """An architecture advlab does not know (a gated MLP over 8x8 digits)."""

    def __init__(self, width=16, style="tensor"):
        super().__init__()
        self.style = style
        self.value, self.gate = nn.Linear(64, width), nn.Linear(64, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = x.flatten(1)
        logits = self.head(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h)))
        return Out(logits) if self.style == "object" else logits
'''

MEAN, STD = 0.3, 0.4


def invoke(*args, env=None):
    return runner.invoke(app, expand_multi_values([str(a) for a in args]), env=env)


@pytest.fixture(scope="module")
def forms(tmp_path_factory, digits):
    """net.py, a briefly trained Net (on normalised inputs) and its weights in every form."""
    root = tmp_path_factory.mktemp("init")
    x, y = digits[0], digits[1]
    _, model = user_model_forms(
        root, MODULE, "init_forms_net", lambda module: module.Net(width=16), x, y, steps=40,
        transform=lambda v: (v - MEAN) / STD,
        names={"module": "net.py", "safetensors": "net.safetensors",
               "state": "net-state.bin",  # extension ignored
               "script": "scripted.model", "export": "exported.pt2"})
    save_model(model, root / "saved", factory=f"{root / 'net.py'}:Net", model_args={"width": 16})
    return {"root": root, "model": model, "x": digits[2], "y": digits[3]}


NORM = ["--mean", str(MEAN), "--std", str(STD)]
FORMS = {
    "factory+safetensors": ["net.py:Net", "--model-args", '{"width": 16}', "--weights",
                            "net.safetensors", *NORM],
    "factory+state-dict": ["net.py:Net", "--model-args", '{"width": 16}', "--weights",
                           "net-state.bin", *NORM],
    "hugging-face-output": ["net.py:Net", "--model-args", '{"width": 16, "style": "object"}',
                            "--weights", "net.safetensors", *NORM],
    "torchscript": ["scripted.model", *NORM],
    "export": ["exported.pt2", *NORM],
    "saved-factory": ["saved", *NORM],
}


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("form", list(FORMS))
def test_train_init_every_form_then_every_command_loads_the_run(forms, form, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(forms["root"])
    run = tmp_path / "runs" / "ft"
    model, *options = FORMS[form]
    before = load_any_model(model, **_api_options(options))
    result = invoke("train", "--init", model, *options, "--dataset", "digits", "--epochs", "1",
                    "--lr", "3e-3", "--val-fraction", "0", "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    tuned = load_model(run)  # no options: the recipe (factory/program, mean/std) is in the run
    assert not torch.equal(_flat(tuned), _flat(before)), "training did not update the weights"
    assert _accuracy(tuned, forms["x"], forms["y"]) > 0.7
    spec = json.loads((run / "model.json").read_text())["spec"]
    assert spec["input_normalize"] == [[MEAN], [STD]]
    if form in ("torchscript", "export"):
        assert (run / spec["program"]).is_file() and "program_sha256" in spec
    env = {"ADVLAB_RUNS": str(tmp_path / "runs")}
    for command in (["evaluate", run, "--eps", "0.05", "--preset", "fast", "--n", "20",
                     "--no-progress"],
                    ["attack", run, "--attack", "fgsm", "--eps", "0.1", "--n", "8", "--out",
                     tmp_path / "adv.npz"]):
        result = invoke(*command, env=env)
        assert result.exit_code == 0, result.output


def _api_options(options: list[str]) -> dict:
    pairs = dict(zip(options[::2], options[1::2]))
    return {"weights": pairs.get("--weights"),
            "model_args": json.loads(pairs["--model-args"]) if "--model-args" in pairs else None,
            "mean": [MEAN], "std": [STD]}


def test_the_fine_tuned_program_run_feeds_geometry_and_report(forms, tmp_path, monkeypatch):
    monkeypatch.chdir(forms["root"])
    run = tmp_path / "runs" / "ft"
    result = invoke("train", "--init", "exported.pt2", *NORM, "--dataset", "digits",
                    "--epochs", "1", "--val-fraction", "0", "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    env = {"ADVLAB_RUNS": str(tmp_path / "runs")}
    result = invoke("geometry", run, "--points", "4", "--eigs", "1", "--no-progress", env=env)
    assert result.exit_code == 0, result.output
    result = invoke("report", tmp_path / "runs", "--out", tmp_path / "report.html", env=env)
    assert result.exit_code == 0, result.output
    # a second fine-tuning from the fine-tuned run keeps the recipe (no options again)
    result = invoke("train", "--init", run, "--dataset", "digits", "--epochs", "1",
                    "--val-fraction", "0", "--out", tmp_path / "runs" / "ft2", "--no-progress")
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "runs" / "ft2" / "model.json").read_text())["spec"]
    assert again["program_kind"] == "export" and again["input_normalize"] == [[MEAN], [STD]]


def test_init_options_without_init_are_refused(tmp_path):
    result = invoke("train", "--weights", tmp_path / "w.safetensors", "--dataset", "digits",
                    "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "--weights" in result.output and "--init MODEL" in result.output


def test_mean_std_twice_is_refused(forms, tmp_path, monkeypatch):
    monkeypatch.chdir(forms["root"])
    run = tmp_path / "ft"
    assert invoke("train", "--init", "scripted.model", *NORM, "--dataset", "digits", "--epochs",
                  "1", "--val-fraction", "0", "--out", run, "--no-progress").exit_code == 0
    with pytest.raises(ValueError, match="already normalises its inputs"):
        load_any_model(run, mean=[0.5], std=[0.5])


@pytest.mark.parametrize("form", ["factory+safetensors", "export"])
def test_resume_of_an_init_run_needs_only_out(forms, form, tmp_path, monkeypatch):
    """Resumed after its last epoch, the run reloads its best epoch from model.safetensors
    (the inner model's tensors) into the wrapped model."""
    monkeypatch.chdir(forms["root"])
    run = tmp_path / "ft"
    args = ["train", "--init", *FORMS[form], "--dataset", "digits", "--epochs", "2",
            "--val-fraction", "0.1", "--no-progress"]
    assert invoke(*args, "--out", run).exit_code == 0
    first = load_model(run)
    (run / "train_result.json").unlink()
    (run / "finished.json").unlink()
    result = invoke("train", "--resume", "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    torch.testing.assert_close(_flat(load_model(run)), _flat(first))
    result = invoke("train", "--resume", "--out", run, "--weights", "net-state.bin")
    assert result.exit_code == 2 and "init_options" in result.output


@pytest.mark.parametrize("program", ["scripted.model", "exported.pt2"])
def test_save_model_keeps_a_loaded_program(forms, program, tmp_path):
    loaded = load_any_model(forms["root"] / program, mean=[MEAN], std=[STD])
    save_model(loaded, tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    x = forms["x"][:20]
    torch.testing.assert_close(again(x), loaded(x))
    spec = json.loads((tmp_path / "saved" / "model.json").read_text())["spec"]
    (tmp_path / "saved" / spec["program"]).write_bytes(b"changed")
    with pytest.raises(ValueError, match="sha256 checksum mismatch"):
        load_model(tmp_path / "saved")


def test_train_help_says_init_takes_every_form_and_runs_a_py_factory():
    import re

    text = " ".join(re.sub("[│╭╮╰╯─]", " ", invoke("train", "--help").output).split())
    for words in ("RUNS that file's code", "TorchScript", ".pt2", "--weights", "--model-args",
                  "--mean", "--import"):
        assert words in text, words
