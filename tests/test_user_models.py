"""Models advlab did not build: a module file with an unknown architecture, trained with plain
PyTorch, evaluated and attacked from the command line in every form advlab reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from harness import user_model_forms
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.models import ModelFileError, load_any_model, load_model, save_model
from advlab.models.checks import ModelDataMismatch, check_model_data

runner = CliRunner()

MODULE = '''
import torch
from torch import nn


class Out:  # a Hugging-Face-style output object
    def __init__(self, logits):
        self.logits = logits


class GatedNet(nn.Module):
    """An architecture advlab does not know: a gated MLP over 8x8 digits."""

    def __init__(self, width=24, classes=10, style="tensor", softmax=False, conv=False):
        super().__init__()
        self.style, self.softmax, self.conv = style, softmax, conv
        self.stem = nn.Conv2d(1, 4, 3, padding=1) if conv else nn.Identity()
        inputs = 256 if conv else 64
        self.value, self.gate = nn.Linear(inputs, width), nn.Linear(inputs, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.stem(x).flatten(1)
        logits = self.head(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h)))
        if self.softmax:
            logits = logits.softmax(1)
        if self.style == "object":
            return Out(logits)
        if self.style == "dict":
            return {"logits": logits, "hidden": h}
        return logits


def build(**kwargs):
    return GatedNet(**kwargs)
'''


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, expand_multi_values([str(a) for a in args]), env=env)


@pytest.fixture(scope="module")
def user(tmp_path_factory, digits):
    """The module file, a model trained with a plain loop, and its weights in every form."""
    root = tmp_path_factory.mktemp("user")
    x, y = digits[0], digits[1]
    module, model = user_model_forms(
        root, MODULE, "gated_for_tests", lambda module: module.GatedNet(width=24), x, y, steps=80,
        names={"module": "gated.py", "safetensors": "weights.safetensors", "state": "weights.pt",
               "script": "scripted.bin",  # extension ignored
               "export": "exported.pt2"})
    np.savez(root / "digits.npz", x_train=digits[0].numpy(), y_train=digits[1].numpy(),
             x_test=digits[2].numpy(), y_test=digits[3].numpy())
    return {"root": root, "module": module, "model": model, "x": digits[2], "y": digits[3]}


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


FORMS = {
    "factory+safetensors": ["gated.py:GatedNet", "--weights", "weights.safetensors",
                            "--model-args", '{"width": 24}'],
    "factory+state-dict": ["gated.py:build", "--weights", "weights.pt", "--model-args",
                           '{"width": 24}'],
    "torchscript": ["scripted.bin"],
    "export": ["exported.pt2"],
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_model_form_loads_with_the_same_predictions(user, form, monkeypatch):
    monkeypatch.chdir(user["root"])
    spec, *rest = FORMS[form]
    options = dict(zip(rest[::2], rest[1::2]))
    model = load_any_model(spec, weights=options.get("--weights"),
                           model_args=json.loads(options.get("--model-args", "null")))
    want = user["model"](user["x"][:50]).detach()
    torch.testing.assert_close(model(user["x"][:50]).detach(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["factory+safetensors", "torchscript", "export"])
def test_cli_evaluates_and_attacks_each_form(user, form, tmp_path, monkeypatch):
    monkeypatch.chdir(user["root"])
    env = {"ADVLAB_RUNS": str(tmp_path / "runs")}
    result = invoke("evaluate", *FORMS[form], "--dataset", "digits", "--eps", "0.05",
                    "--preset", "fast", "--n", "30", "--no-progress", env=env)
    assert result.exit_code == 0, result.output
    assert "30 test points" in result.output and "verdict" in result.output
    out = tmp_path / "adv.npz"
    result = invoke("attack", *FORMS[form], "--dataset", "digits", "--attack", "pgd", "--eps",
                    "0.1", "--n", "16", "--param", "steps=3", "--out", out, env=env)
    assert result.exit_code == 0, result.output
    arrays = np.load(out)
    assert arrays["x_adv"].shape == (16, 1, 8, 8)
    assert np.abs(arrays["x_adv"] - arrays["x"]).max() <= 0.1 + 1e-6


@pytest.mark.parametrize("style", ["object", "dict"])
def test_hugging_face_style_outputs_are_unwrapped(user, style):
    path = f"{user['root'] / 'gated.py'}:GatedNet"
    model = load_any_model(path, weights=user["root"] / "weights.pt",
                           model_args={"width": 24, "style": style})
    assert _accuracy(model, user["x"], user["y"]) == pytest.approx(
        _accuracy(user["model"], user["x"], user["y"]))


def test_mean_std_wrap_the_model_in_normalize(user):
    path = f"{user['root'] / 'gated.py'}:GatedNet"
    raw = load_any_model(path, weights=user["root"] / "weights.pt", model_args={"width": 24})
    wrapped = load_any_model(path, weights=user["root"] / "weights.pt", model_args={"width": 24},
                             mean=[0.3], std=[0.5])
    x = user["x"][:20]
    torch.testing.assert_close(wrapped(x), raw((x - 0.3) / 0.5))


def test_mean_std_from_the_cli(user, tmp_path, monkeypatch):
    monkeypatch.chdir(user["root"])
    result = invoke("evaluate", "scripted.bin", "--dataset", "digits", "--mean", "0.0",
                    "--std", "1.0", "--eps", "0.01", "--preset", "fast", "--n", "10",
                    "--no-progress", env={"ADVLAB_RUNS": str(tmp_path)})
    assert result.exit_code == 0, result.output


def test_save_model_with_a_factory_round_trips(user, tmp_path):
    factory = f"{user['root'] / 'gated.py'}:GatedNet"
    with pytest.raises(ValueError, match="factory='path/to/file.py:GatedNet'"):
        save_model(user["model"], tmp_path / "bare")
    save_model(user["model"], tmp_path / "saved", factory=factory, model_args={"width": 24},
               dataset="digits")
    loaded = load_model(tmp_path / "saved")
    torch.testing.assert_close(loaded(user["x"][:8]), user["model"](user["x"][:8]))
    result = invoke("evaluate", tmp_path / "saved", "--eps", "0.02", "--preset", "fast",
                    "--n", "10", "--no-progress")  # the dataset comes from the metadata
    assert result.exit_code == 0, result.output


def test_registered_model_from_the_cli_with_import(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from torch import nn\nfrom advlab.models import register_model\n\n"
        "@register_model('tinynet_for_tests', replace=True)\n"
        "def tinynet(num_classes, input_shape):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import mypkg.models  # noqa: F401

    from advlab.models import MODELS, create_model

    save_model(create_model("tinynet_for_tests", 10, (1, 8, 8), seed=0), tmp_path / "m",
               dataset="digits")
    import sys

    # as in a fresh process: the module is not imported, so the name is not registered
    MODELS._entries.pop("tinynet_for_tests")
    for name in ("mypkg.models", "mypkg"):
        monkeypatch.delitem(sys.modules, name)
    args = ["evaluate", tmp_path / "m", "--eps", "0.01", "--preset", "fast", "--n", "8",
            "--no-progress"]
    env = {"ADVLAB_RUNS": str(tmp_path / "runs")}
    result = invoke(*args, env=env)
    assert result.exit_code == 2 and "--import your_package.models" in result.output
    result = invoke(*args, "--import", "mypkg.models", env=env)
    assert result.exit_code == 0, result.output
    MODELS._entries.pop("tinynet_for_tests")


# ----------------------------------------------------------------------------- clear errors
def _npz(path, x, y):
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize("case, match", [
    ("16x16", r"cannot take .*\(2, 1, 16, 16\)"),
    ("flat", r"flat \(N, 64\).*reshape"),
    ("labels", r"labels up to 11 \(12 classes\) but the model outputs 10"),
    ("softmax", r"returns probabilities.*drop the final softmax"),
])
def test_model_data_mismatches_are_named(user, tmp_path, case, match):
    path = f"{user['root'] / 'gated.py'}:GatedNet"
    rng = np.random.default_rng(0)
    kwargs = {"width": 24, "conv": case == "flat", "softmax": case == "softmax"}
    model = load_any_model(path, model_args=kwargs)
    if case == "flat":
        model.advlab_spec = {"input_shape": [1, 8, 8]}
    x = {"16x16": rng.random((2, 1, 16, 16)), "flat": rng.random((2, 64))}.get(
        case, rng.random((2, 1, 8, 8)))
    y = torch.tensor([0, 11] if case == "labels" else [0, 1])
    with pytest.raises(ModelDataMismatch, match=match):
        check_model_data(model, torch.as_tensor(x, dtype=torch.float32), y)


def test_cli_shape_mismatch_is_one_line_before_any_work(user, tmp_path, monkeypatch):
    monkeypatch.chdir(user["root"])
    big = _npz(tmp_path / "big.npz", np.random.default_rng(0).random((40, 1, 16, 16)),
               np.arange(40) % 10)
    result = invoke("evaluate", *FORMS["factory+safetensors"], "--data", big, "--eps", "0.1",
                    env={"ADVLAB_RUNS": str(tmp_path)})
    assert result.exit_code == 2 and "cannot take" in result.output
    result = invoke("evaluate", *FORMS["factory+safetensors"], "--dataset", "spirals",
                    env={"ADVLAB_RUNS": str(tmp_path)})
    assert result.exit_code == 2 and "cannot take spirals" in result.output


def test_pickled_model_files_are_refused_with_the_way_out(user, tmp_path):
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), tmp_path / "whole.pt")
    with pytest.raises(ModelFileError, match="never unpickles as a model.*--weights"):
        load_any_model(tmp_path / "whole.pt")
    with pytest.raises(ModelFileError, match="weights_only=True and never unpickles"):
        load_any_model(f"{user['root'] / 'gated.py'}:GatedNet", weights=tmp_path / "whole.pt")
    with pytest.raises(ModelFileError, match="holds weights but no architecture"):
        load_any_model(user["root"] / "weights.safetensors")
    with pytest.raises(ModelFileError, match="missing keys"):
        load_any_model(f"{user['root'] / 'gated.py'}:GatedNet", weights=user["root"] / "weights.pt",
                       model_args={"width": 8})
    with pytest.raises(ValueError, match="has no 'Nope'.*GatedNet"):
        load_any_model(f"{user['root'] / 'gated.py'}:Nope")


def test_evaluate_without_a_model_says_what_to_give():
    result = invoke("evaluate")
    assert result.exit_code == 2 and "Give a MODEL" in result.output


def test_help_says_a_py_factory_runs_its_code():
    import re

    for command in ("evaluate", "attack"):
        result = invoke(command, "--help")
        assert "RUNS that file's code" in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_train_init_fine_tunes_a_factory_saved_model(user, tmp_path):
    factory = f"{user['root'] / 'gated.py'}:GatedNet"
    save_model(user["model"], tmp_path / "saved", factory=factory, model_args={"width": 24})
    result = invoke("train", "--init", tmp_path / "saved", "--dataset", "digits", "--epochs", "1",
                    "--lr", "1e-4", "--out", tmp_path / "runs" / "ft", "--no-progress")
    assert result.exit_code == 0, result.output
    tuned = load_model(tmp_path / "runs" / "ft")
    assert _accuracy(tuned, user["x"], user["y"]) > 0.8
    result = invoke("evaluate", tmp_path / "runs" / "ft", "--eps", "0.02", "--preset", "fast",
                    "--n", "10", "--no-progress")
    assert result.exit_code == 0, result.output
