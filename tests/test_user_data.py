"""Your data: npz / .pt / .safetensors / image folders, honest held-out test splits, clear
errors, and the Python API's conversions (numpy, int32, float64, TensorDataset, DataLoader)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from advlab.cli import app, expand_multi_values
from advlab.data import DatasetFormatError, load_dataset

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, expand_multi_values([str(a) for a in args]), env=env)


def test_random_labels_give_chance_test_accuracy(tmp_path):
    """Nothing to generalise: a number measured on training points would be far above 50 %;
    the held-out split gives chance (a 95 % interval around 0.5 for n = 160 is +-0.08)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "random.npz"
    np.savez(path, x=rng.random((800, 16)).astype(np.float32), y=rng.integers(0, 2, 800))
    result = invoke("train", "--data", path, "--model", "mlp", "--epochs", "30", "--lr", "0.01",
                    "--batch-size", "64", "--out", tmp_path / "runs" / "random", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "test split held-out 20% of the file (160 points" in result.output
    summary = json.loads((tmp_path / "runs" / "random" / "train_result.json").read_text())
    assert abs(summary["test_acc"] - 0.5) < 0.12 and summary["n_test"] == 160
    history = json.loads((tmp_path / "runs" / "random" / "history.json").read_text())
    assert history[-1]["train_acc"] > 0.7  # it did fit the training points
    config = json.loads((tmp_path / "runs" / "random" / "config.json").read_text())
    assert config["test_split"].startswith("held-out 20%")
    result = invoke("evaluate", tmp_path / "runs" / "random", "--eps", "0.01", "--preset", "fast",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert "160 test points" in result.output  # the same held-out split, capped at its size


def test_held_out_split_of_a_model_advlab_did_not_train_is_not_called_test(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.random((50, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 50))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.jit.save(torch.jit.script(model), tmp_path / "m.pt")
    result = invoke("evaluate", tmp_path / "m.pt", "--data", path, "--eps", "0.01", "--preset",
                    "fast", "--no-progress", env={"ADVLAB_RUNS": str(tmp_path / "runs")})
    assert result.exit_code == 0, result.output
    assert "test points" not in result.output
    assert "cannot tell whether these points were in its training data" in result.output
    from advlab.store import Store

    with Store(tmp_path / "runs" / "advlab.db") as store:  # the store row says it too
        (row,) = store.get_evaluations(kind="evaluate")
        assert row["result"]["extras"]["points"] != "test"
        assert "cannot tell" in row["result"]["extras"]["points"]


def test_tensor_files_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    x, y = torch.rand(30, 1, 4, 4), torch.arange(30) % 3
    torch.save({"x": x, "y": y.int()}, tmp_path / "d.pt")
    save_file({"x_train": x, "y_train": y, "x_test": x[:5].clone(), "y_test": y[:5].clone()}, tmp_path / "d.bin")
    pt = load_dataset("file", path=tmp_path / "d.pt")
    assert len(pt) == 24 and pt.info.num_classes == 3 and pt.y.dtype == torch.int64
    st = load_dataset("file", "test", path=tmp_path / "d.bin")
    assert torch.equal(st.x, x[:5]) and st.info.test_split == "given"
    torch.save({"x": x, "y": y, "junk": _Foreign()}, tmp_path / "bad.pt")
    with pytest.raises(DatasetFormatError, match="not a plain dict of tensors"):
        load_dataset("file", path=tmp_path / "bad.pt")


class _Foreign:
    pass


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            folder = tmp_path / "img" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                size = 12 if i == 0 else 10
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    with pytest.raises(DatasetFormatError, match="different sizes.*--image-size"):
        load_dataset("file", path=tmp_path / "img")
    train = load_dataset("file", path=tmp_path / "img", image_size=8)
    test = load_dataset("file", "test", path=tmp_path / "img", image_size=8)
    assert train.x.shape == (6, 3, 8, 8) and test.x.shape == (6, 3, 8, 8)
    assert train.info.class_names == ("cat", "dog") and train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert 0 <= float(train.x.min()) and float(train.x.max()) <= 1


@pytest.mark.parametrize("case, match", [
    ("nan", r"2 NaN and 1 inf value"),
    ("channels_last", r"looks channels-last \(N, H, W, C\).*transpose\(0, 3, 1, 2\)"),
    ("range", r"must lie in \[0, 1\]"),
])
def test_data_errors_name_the_problem(tmp_path, case, match):
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    if case == "nan":
        x[0, 0, 0, :3] = [np.nan, np.nan, np.inf]
    elif case == "channels_last":
        x = np.random.default_rng(0).random((10, 8, 8, 3)).astype(np.float32)
    else:
        x *= 3
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(DatasetFormatError, match=match):
        load_dataset("file", path=tmp_path / "d.npz")


# ----------------------------------------------------------------------------- the Python API
def _mlp(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(dtype)


@pytest.mark.parametrize("form", ["numpy", "int32", "float64", "tensordataset", "dataloader"])
def test_fit_and_evaluate_take_every_data_form(digits, form):
    from advlab import ThreatModel, evaluate
    from advlab.training import fit

    x, y = digits[0][:256], digits[1][:256]
    dtype = torch.float64 if form == "float64" else torch.float32
    data = {
        "numpy": (x.numpy(), y.numpy()),
        "int32": (x, y.int()),
        "float64": (x.double(), y),
        "tensordataset": TensorDataset(x, y.int()),
        "dataloader": DataLoader(TensorDataset(x, y), batch_size=64),
    }[form]
    result = fit(_mlp(dtype), data, epochs=4, batch_size=64, lr=1e-2, schedule="constant",
                 progress=False)
    assert result.history[-1]["train_acc"] > 0.3
    assert next(result.model.parameters()).dtype == dtype
    evaluation = evaluate(result.model, data, ThreatModel("linf", 0.02), attacks="fast",
                          sanity=False)
    assert evaluation.n == 256 and 0.3 < evaluation.clean_accuracy <= 1
    if form == "numpy":
        separate = evaluate(result.model, x.numpy(), y.numpy().astype(np.int32),
                            ThreatModel("linf", 0.02), attacks="fast", sanity=False, n=32)
        assert separate.n == 32
        text = repr(separate)
        assert "\n" not in text and text.startswith("EvaluationResult(linf eps=0.02, n=32")
        assert len(text) < 200


def test_info_counts_runs_with_api_evaluations_only(tmp_path):
    from advlab.store import Store

    with Store(tmp_path / "advlab.db") as store:
        store.add_evaluation("my-api-model", "evaluate", {"eps": 0.1}, {"robust_accuracy": 0.4})
    result = invoke("info", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "runs in" in result.output and ": 1 (0 trained here, 1 with evaluations only" in result.output
    assert "my-api-model" in result.output
