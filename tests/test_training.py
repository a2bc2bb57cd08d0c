"""The fit loop: learning, run files, checkpoints, exact resume (also after SIGKILL), early
stopping, config checks, the store and the ``train`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness import Crash, sigkill_after_epoch
from torch import nn
from weights import assert_same_weights, snapshot

from advlab.models import create_model, load_model
from advlab.store import Store
from advlab.training import (
    OBJECTIVES,
    fit,
    get_objective,
    load_checkpoint,
)

RECORD_KEYS = {"epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s",
               "samples_per_s"}
ROOT = Path(__file__).resolve().parents[1]




def _dropout_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(32, 10))


def _spec_mlp() -> nn.Module:
    return create_model("mlp", 10, (1, 8, 8), widths=(32,), seed=0)


@pytest.fixture()
def small(digits):
    x_tr, y_tr, x_te, y_te = digits
    return (x_tr[:640], y_tr[:640]), (x_te[:200], y_te[:200])


def test_fit_learns_and_writes_run_dir(digits, tmp_path):
    x_tr, y_tr, x_te, y_te = digits
    run_dir = tmp_path / "run"
    result = fit(_spec_mlp(), (x_tr, y_tr), val_data=(x_te, y_te), epochs=3, batch_size=64,
                 lr=1e-2, progress=False, run_dir=run_dir, config={"dataset": "digits"})
    assert len(result.history) == 3 and result.run_dir == run_dir
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    for record in result.history:
        assert RECORD_KEYS <= set(record)
        assert record["samples_per_s"] > 0 and record["time_s"] > 0
    assert result.history[-1]["step"] == 3 * 22  # ceil(1397 / 64) steps per epoch
    assert result.history[-1]["val_acc"] > 0.85 and result.history[-1]["train_acc"] > 0.8
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    best = max(range(3), key=lambda i: result.history[i]["val_acc"]) + 1
    assert result.best_epoch == best
    # the files: config, history, checkpoint (weights-only loadable), best and last models
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["checkpoint.pt", "config.json", "finished.json", "history.json", "last.json",
                     "last.safetensors", "model.json", "model.safetensors"]  # no temp files
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digits" and config["seed"] == 0 and config["epochs"] == 3
    assert config["model_spec"]["name"] == "mlp" and config["objective"]["name"] == "none"
    assert config["train_data"]["size"] == 1397 and config["advlab_version"]
    assert json.loads((run_dir / "history.json").read_text()) == result.history
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (3, 0)
    assert checkpoint["best_epoch"] == best and checkpoint["config"] == config
    assert_same_weights(snapshot(load_model(run_dir)), snapshot(result.model), atol=0)
    assert_same_weights(snapshot(load_model(run_dir, name="last")), checkpoint["model"], atol=0)
    assert not result.model.training


def test_fit_is_deterministic_and_leaves_global_rng_alone(small):
    train, val = small
    models = [_dropout_mlp(), _dropout_mlp()]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    results = [fit(model, train, val_data=val, epochs=1, batch_size=32, progress=False)
               for model in models]
    assert torch.equal(torch.get_rng_state(), before)
    assert_same_weights(snapshot(results[0].model), snapshot(results[1].model), atol=0)
    other = fit(_dropout_mlp(), train, epochs=1, batch_size=32, progress=False, seed=1)
    assert not torch.equal(other.model[1].weight, results[0].model[1].weight)


def test_resume_mid_epoch_reaches_identical_weights(small, tmp_path):
    train, val = small
    options = dict(val_data=val, epochs=3, batch_size=32, lr=3e-3, progress=False,
                   checkpoint_every=7, schedule="onecycle", optimizer="adam")
    reference = fit(_dropout_mlp(), train, objective=Crash(), **options)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # 20 steps per epoch: dies in epoch 2 at step 9
        fit(_dropout_mlp(), train, objective=Crash(at=30), run_dir=run_dir,
            **options)
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 8)  # global step 28 = 4 * 7
    resumed = fit(_dropout_mlp(seed=5), train, objective=Crash(), run_dir=run_dir,
                  resume=True, **options)
    assert_same_weights(snapshot(resumed.model), snapshot(reference.model), atol=1e-6)
    assert len(resumed.history) == 3
    for got, want in zip(resumed.history, reference.history, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "step"):
            assert got[key] == pytest.approx(want[key], rel=1e-6), key
    # resuming a finished run trains no more
    again = fit(_dropout_mlp(seed=7), train, objective=Crash(), run_dir=run_dir,
                resume=True, **options)
    assert again.history == resumed.history


def test_resume_refuses_a_different_config(small, tmp_path):
    train, _ = small
    run_dir = tmp_path / "run"
    options = dict(epochs=1, batch_size=64, progress=False, run_dir=run_dir)
    fit(_dropout_mlp(), train, lr=1e-3, **options)
    with pytest.raises(ValueError, match="config differs in lr"):
        fit(_dropout_mlp(), train, lr=2e-3, resume=True, **options)
    with pytest.raises(ValueError, match="differs in batch_size, seed"):
        fit(_dropout_mlp(), train, resume=True, **{**options, "batch_size": 32}, seed=3)
    with pytest.raises(ValueError, match="epochs may only change with schedule='constant'"):
        fit(_dropout_mlp(), train, resume=True, **{**options, "epochs": 2})
    with pytest.raises(ValueError, match="resume=True needs run_dir"):
        fit(_dropout_mlp(), train, resume=True, epochs=1)
    # settings on the whitelist may change
    fit(_dropout_mlp(), train, resume=True, checkpoint_every=3, device="cpu", **options)


def test_constant_schedule_can_extend_epochs_exactly(small, tmp_path):
    train, val = small
    options = dict(val_data=val, batch_size=64, schedule="constant", optimizer="sgd", lr=0.05,
                   progress=False)
    reference = fit(_dropout_mlp(), train, epochs=2, **options)
    fit(_dropout_mlp(), train, epochs=1, run_dir=tmp_path / "run", **options)
    extended = fit(_dropout_mlp(seed=9), train, epochs=2, run_dir=tmp_path / "run", resume=True,
                   **options)
    assert [r["epoch"] for r in extended.history] == [1, 2]
    assert_same_weights(snapshot(extended.model), snapshot(reference.model), atol=1e-6)


def test_early_stopping_keeps_the_best_epoch(small, tmp_path):
    train, _ = small
    scripted = [0.1, 0.5, 0.3, 0.2, 0.9, 0.95]
    snapshots: dict[int, dict] = {}

    def epoch_end(model, epoch):
        snapshots[epoch] = snapshot(model)
        return {"adv_val_acc": scripted[epoch - 1]}

    result = fit(_spec_mlp(), train, epochs=6, batch_size=64, progress=False, epoch_end=epoch_end,
                 select_metric="adv_val_acc", early_stopping_patience=2, run_dir=tmp_path / "run")
    assert [r["adv_val_acc"] for r in result.history] == scripted[:4]  # stopped after epoch 4
    assert result.best_epoch == 2
    assert_same_weights(snapshot(result.model), snapshots[2], atol=0)
    assert_same_weights(snapshot(load_model(tmp_path / "run")), snapshots[2], atol=0)
    assert_same_weights(snapshot(load_model(tmp_path / "run", name="last")), snapshots[4], atol=0)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["stopped"] is True
    with pytest.raises(ValueError, match="early stopping needs the metric 'val_acc'"):
        fit(_spec_mlp(), train, epochs=2, progress=False, early_stopping_patience=1)


def test_select_epoch_rules():
    from advlab.training.selection import select_epoch

    values, ses = [0.70, 0.772, 0.760, 0.764, None, 0.760], [0.02, 0.0188, 0.019, 0.019, None, 0.019]
    assert select_epoch(values) == 2  # the plain maximum
    assert select_epoch(values, ses, within_se=1.0) == 6  # 0.760 >= 0.772 - 0.0188
    assert select_epoch(values, ses, within_se=0.5) == 4  # 0.764 >= 0.7626 > 0.760
    assert select_epoch([0.5, 0.5]) == 1 and select_epoch([0.5, 0.5], [0.0, 0.0], 1.0) == 2
    assert select_epoch([None, float("nan")]) is None
    with pytest.raises(ValueError, match="standard error of epoch 1"):
        select_epoch([0.5], None, within_se=1.0)


def test_a_decline_after_the_kept_epoch_is_flagged_only_beyond_the_noise():
    from advlab.training.selection import decline_after_kept

    def records(values, se):
        return [{"epoch": i + 1, "adv_val_acc": v, "adv_val_acc_se": se} for i, v in enumerate(values)]

    # TRADES on preact_resnet18 width 16 (Fashion-MNIST, 500 points): a collapse after epoch 3
    collapse = records([0.684, 0.732, 0.742, 0.504, 0.486], 0.021)
    note = decline_after_kept(collapse, "adv_val_acc", 3)
    assert note is not None and "fell from 74.2% (epoch 3, kept) to 48.6% at the last epoch 5" in note
    assert "8.6 standard errors" in note
    # PGD-AT on the same model: 77.0 -> 73.2 is 1.4 standard errors of the difference: noise
    assert decline_after_kept(records([0.702, 0.746, 0.748, 0.770, 0.738, 0.732], 0.019),
                              "adv_val_acc", 4) is None
    assert decline_after_kept(collapse, "adv_val_acc", 5) is None  # the kept epoch is the last
    assert decline_after_kept(collapse, "val_acc", 3) is None  # the metric is not recorded
    assert decline_after_kept(collapse, "adv_val_acc", None) is None
    # ``advlab train`` prints it under the best epoch
    from types import SimpleNamespace

    from advlab.experiments.runs import describe_run

    for record in collapse:
        record["val_acc"] = 0.85
    run = SimpleNamespace(run_dir="runs/r", store_path="runs/advlab.db", run_name="r", test_acc=0.84,
                          summary={"test_split": "given", "n_test": 10000, "time_s": 2299.4},
                          result=SimpleNamespace(history=collapse, best_epoch=3, events=[]))
    lines = describe_run(run)
    assert lines[1].startswith("best epoch 3: val_acc 0.8500, adv_val_acc 0.7420")
    assert lines[2].startswith("warning    adv_val_acc fell from 74.2% (epoch 3, kept)")


def test_selection_within_standard_errors_keeps_the_latest_close_epoch(small, tmp_path):
    train, _ = small
    # (metric, standard error): the maximum 0.80 (se 0.02) at epoch 2; 0.785 is within one se of
    # it, 0.75 is not, 0.79 is; a new maximum 0.90 (se 0.01) at epoch 5, then 0.891 is within.
    scripted = [(0.5, 0.02), (0.80, 0.02), (0.785, 0.02), (0.75, 0.02), (0.90, 0.01),
                (0.891, 0.01), (0.85, 0.01)]
    snapshots: dict[int, dict] = {}

    def epoch_end(model, epoch):
        snapshots[epoch] = snapshot(model)
        value, se = scripted[epoch - 1]
        return {"adv_val_acc": value, "adv_val_acc_se": se}

    options = dict(batch_size=64, progress=False, epoch_end=epoch_end, select_metric="adv_val_acc")
    plain = fit(_spec_mlp(), train, epochs=7, **options)
    assert plain.best_epoch == 5  # the plain maximum
    chosen = []
    for epochs in range(1, 8):  # the selection after each epoch count (constant schedule)
        run = fit(_spec_mlp(), train, epochs=epochs, schedule="constant", select_within_se=1.0,
                  run_dir=tmp_path / "run", resume=epochs > 1, **options)
        chosen.append(run.best_epoch)
    assert chosen == [1, 2, 3, 3, 5, 6, 6]
    assert_same_weights(snapshot(run.model), snapshots[6], atol=0)
    assert run.config["select_within_se"] == 1.0
    with pytest.raises(ValueError, match="select_within_se"):  # a resume must keep the rule
        fit(_spec_mlp(), train, epochs=8, schedule="constant", run_dir=tmp_path / "run",
            resume=True, **options)
    with pytest.raises(ValueError, match="select_within_se must be a number >= 0"):
        fit(_spec_mlp(), train, epochs=1, select_within_se=-1.0, **options)
    no_se = dict(options, epoch_end=lambda model, epoch: {"adv_val_acc": 0.5})
    with pytest.raises(ValueError, match="needs 'adv_val_acc_se' in each epoch record"):
        fit(_spec_mlp(), train, epochs=1, select_within_se=1.0, **no_se)


def test_objectives_registry_and_outputs(small):
    assert "none" in OBJECTIVES
    objective = get_objective("None")
    assert objective.name == "none" and objective.params == {}
    with pytest.raises(ValueError, match="unknown objective .*'pgd-at-typo'; available: .*none.*did you mean 'pgd-at'"):
        get_objective("pgd-at-typo")
    with pytest.raises(ValueError, match="takes no parameters"):
        get_objective("none", eps=0.1)
    train, _ = small
    loss_only = fit(_dropout_mlp(), train, epochs=1, batch_size=64, progress=False,
                    objective=lambda m, x, y: nn.functional.cross_entropy(m(x), y))
    assert loss_only.history[0]["train_acc"] is None
    assert loss_only.config["objective"]["name"].endswith("<lambda>")
    with pytest.raises(ValueError, match="logits of shape"):
        fit(_dropout_mlp(), train, epochs=1, progress=False,
            objective=lambda m, x, y: (nn.functional.cross_entropy(m(x), y), m(x)[:1]))


def test_bad_arguments_are_clear(small):
    train, _ = small
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        fit(_dropout_mlp(), train, batch_size=0)
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd, got 'rmsprop'"):
        fit(_dropout_mlp(), train, optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule must be one of onecycle, cyclic, multistep, cosine, constant"):
        fit(_dropout_mlp(), train, schedule="step")
    with pytest.raises(ValueError, match="an \\(x, y\\) pair of tensors of the same length"):
        fit(_dropout_mlp(), (train[0], train[1][:10]), progress=False)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(_dropout_mlp(), train, epochs=1, lr=1e30, optimizer="sgd", schedule="constant",
            progress=False)


def test_map_style_dataset_and_store(small, tmp_path):
    train, val = small
    dataset = torch.utils.data.TensorDataset(*train)

    class MapStyle(torch.utils.data.Dataset):  # no .x/.y: goes through a DataLoader
        def __len__(self):
            return len(dataset)

        def __getitem__(self, index):
            return dataset[index]

    store_path = tmp_path / "advlab.db"
    a = fit(_dropout_mlp(), MapStyle(), val_data=val, epochs=2, batch_size=64, progress=True,
            store=store_path, run_name="exp", run_dir=tmp_path / "exp")
    b = fit(_dropout_mlp(), dataset, val_data=val, epochs=2, batch_size=64, progress=False)
    assert_same_weights(snapshot(a.model), snapshot(b.model), atol=1e-6)
    with Store(store_path) as store:
        run = store.get_run("exp")
        assert run["metadata"]["status"] == "finished" and run["metadata"]["epochs_done"] == 2
        assert run["config"] == a.config and run["path"] == str((tmp_path / "exp").resolve())
        assert [m["metrics"] for m in store.get_metrics("exp")] == a.history


_KILL_SCRIPT = """
import os, sys, time, torch
from torch import nn
from advlab.training import fit
torch.set_num_threads(1)
{setup}

class SlowDigits(torch.utils.data.Dataset):  # same samples, slow enough to be killed mid-run
    def __len__(self):
        return len(x)

    def __getitem__(self, index):
        time.sleep(0.001)
        return x[index], y[index]

fit(model, SlowDigits(), **options, run_dir=sys.argv[1])
"""

_KILL_SETUP = """
from sklearn.datasets import load_digits
bunch = load_digits()
x = torch.tensor(bunch.images[:480] / 16.0, dtype=torch.float32).unsqueeze(1)
y = torch.tensor(bunch.target[:480])
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
options = dict(val_data=(x[:100], y[:100]), epochs=3, batch_size=32, checkpoint_every=4,
               progress=False)
"""


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    """A subprocess training on a (slow) map-style dataset is SIGKILLed after its first
    checkpoint of epoch 2; resuming from its run_dir in this process (same samples as plain
    tensors) reaches the weights of an uninterrupted run to 1e-6."""
    script = tmp_path / "train_script.py"
    script.write_text(_KILL_SCRIPT.replace("{setup}", _KILL_SETUP))
    run_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    scope: dict = {"torch": torch, "nn": nn}
    exec(_KILL_SETUP, scope)
    reference = fit(scope["model"], (scope["x"], scope["y"]), **scope["options"])
    path = run_dir / "checkpoint.pt"
    assert sigkill_after_epoch(victim, path, timeout=90) == -signal.SIGKILL, victim.stdout.read().decode()
    killed_at = load_checkpoint(path)
    assert 1 <= killed_at["epoch"] < 3
    exec(_KILL_SETUP, scope)  # a fresh model; the checkpoint restores everything
    resumed = fit(scope["model"], (scope["x"], scope["y"]), **scope["options"],
                  run_dir=run_dir, resume=True)
    assert len(resumed.history) == 3
    assert_same_weights(snapshot(resumed.model), snapshot(reference.model), atol=1e-6)
    assert [r["val_acc"] for r in resumed.history] == pytest.approx(
        [r["val_acc"] for r in reference.history])
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_train_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from advlab.cli import app
    monkeypatch.setenv("ADVLAB_RUNS", str(tmp_path / "runs"))
    args = ["--dataset", "digits", "--model", "mlp", "--epochs", "2", "--batch-size", "64",
            "--lr", "3e-3", "--no-progress", "--n-train", "600"]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "digits-mlp-none"
    assert "test acc" in result.output and str(run_dir) in result.output
    summary = json.loads((run_dir / "train_result.json").read_text())
    assert 0.5 < summary["test_acc"] <= 1 and summary["epochs_done"] == 2
    with Store(tmp_path / "runs" / "advlab.db") as store:
        run = store.get_run("digits-mlp-none")
        assert run["metadata"]["test_acc"] == summary["test_acc"]
        assert run["config"]["dataset"] == "digits" and run["config"]["n_train"] == 600
        assert len(store.get_metrics("digits-mlp-none")) == 2
        assert store.get_evaluations("digits-mlp-none")[0]["result"]["accuracy"] == summary["test_acc"]
    again = CliRunner().invoke(app, ["train", *args, "--resume"])  # finished run: nothing more to do
    assert again.exit_code == 0, again.output
    refused = CliRunner().invoke(app, ["train", *args, "--resume", "--lr", "1e-2"])
    assert refused.exit_code == 2 and "lr: the run has 0.003, given 0.01" in refused.output, refused.output


# -- the rollback callback ------------------------------------------------------------------
class _CollapsesOnce:
    """Cross-entropy whose end-of-epoch report claims a collapse at its second report."""

    def __init__(self, *, watches: bool) -> None:
        self.watches_collapse, self.reports, self.remedies = watches, 0, []

    def __call__(self, model, x, y):
        logits = model(x)
        return nn.functional.cross_entropy(logits, y), logits

    def epoch_end(self, model, record):
        from advlab.training import EpochReport

        self.reports += 1
        return EpochReport(metrics={"report": self.reports},
                           collapse="it collapsed" if self.reports == 2 else None)

    def after_rollback(self, count):
        self.remedies.append(count)
        return "tried again"


def test_rollback_callback_redoes_the_collapsed_epoch(small, tmp_path, caplog):
    train, _ = small
    objective = _CollapsesOnce(watches=True)
    options = dict(epochs=3, batch_size=64, progress=False, schedule="constant")
    with caplog.at_level("WARNING", logger="advlab"):
        result = fit(_dropout_mlp(), train, objective=objective, run_dir=tmp_path, **options)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["report"] for r in result.history] == [1, 3, 4]  # report 2 was the collapse
    (event,) = result.events
    assert (event["epoch"], event["rolled_back_to"], event["action"]) == (2, 1, "tried again")
    assert objective.remedies == [1] and "collapse" not in result.history[1]
    # the redo starts from the restored state (weights, optimiser, RNG): the same computation
    assert result.history[1]["train_loss"] == event["metrics"]["train_loss"]
    assert "catastrophic overfitting detected at epoch 2" in caplog.text
    assert load_checkpoint(tmp_path / "checkpoint.pt")["events"] == result.events


def test_collapse_without_watch_installs_no_rollback(small, tmp_path, caplog):
    train, _ = small
    with caplog.at_level("WARNING", logger="advlab"):
        result = fit(_dropout_mlp(), train, objective=_CollapsesOnce(watches=False),
                     run_dir=tmp_path, epochs=3, batch_size=64, progress=False)
    assert [r["report"] for r in result.history] == [1, 2, 3] and result.events == []
    assert "does not set watches_collapse" in caplog.text
    assert "rollback" not in load_checkpoint(tmp_path / "checkpoint.pt")


def test_argument_checks_are_one_family():
    from advlab._checks import check_choice, check_int, check_number

    assert check_int("steps", 3) == 3 and check_number("eps", 1) == 1.0
    assert check_number("lam", 0, allow_zero=True) == 0.0 and check_number("a", 2, minimum=2) == 2.0
    assert check_choice("schedule", "One-Cycle", ("onecycle", "cosine"), fold=True) == "onecycle"
    for call, match in [(lambda: check_int("steps", True), "steps must be an integer >= 1"),
                        (lambda: check_int("n", -1, minimum=0), "n must be an integer >= 0"),
                        (lambda: check_number("eps", float("nan")), "eps must be finite and > 0"),
                        (lambda: check_number("eps", "0.1"), "eps must be a number"),
                        (lambda: check_number("q", 0.5, minimum=1), "q must be a finite number >= 1"),
                        (lambda: check_choice("norm", "l3", ("l2", "linf")),
                         "norm must be one of l2, linf, got 'l3'")]:
        with pytest.raises(ValueError, match=match):
            call()
