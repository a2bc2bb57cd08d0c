"""Training recipes (named sets of train_run options) and the robust-training schedules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advlab.experiments.runs import train_run
from advlab.training.optim import build_scheduler, schedule_factor
from advlab.training.recipes import (
    NOT_MEASURED,
    describe_recipe,
    expand_recipe,
    get_recipe,
    recipe_names,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_issue_recipes_exist_and_are_documented():
    assert {"digits-linf-0.1", "fmnist-linf-0.1-fast", "fmnist-linf-0.1-best"} <= set(recipe_names())
    for name in recipe_names():
        recipe = get_recipe(name)
        assert recipe.description and recipe.expected and recipe.measured
        assert {"dataset", "model", "defense", "defense_params", "epochs", "schedule"} <= set(recipe.options)
        assert any(line.startswith("  measured:") for line in describe_recipe(name))
    assert get_recipe("fmnist-linf-0.1-fast").budget_minutes == 30
    assert get_recipe("fmnist-linf-0.1-best").budget_minutes == 120
    assert all(get_recipe(name).measured != NOT_MEASURED
               for name in ("fmnist-linf-0.1-fast", "fmnist-linf-0.1-best"))


def test_a_recipe_expands_to_its_documented_options():
    options = expand_recipe("fmnist-linf-0.1-fast")
    assert options == get_recipe("fmnist-linf-0.1-fast").options
    assert options["defense"] == "n-fgsm" and options["defense_params"] == {"eps": 0.1, "clean_logits": False}
    options["defense_params"]["eps"] = 0.3  # a copy: the registered recipe is unchanged
    assert get_recipe("fmnist-linf-0.1-fast").options["defense_params"] == {"eps": 0.1,
                                                                             "clean_logits": False}



@pytest.mark.parametrize("name, defense, epochs", [("fmnist-linf-0.1-fast", "n-fgsm", 5),
                                                   ("fmnist-linf-0.1-best", "pgd-at", 6)])
def test_the_fashion_recipes_are_capacity_cells(name, defense, epochs):
    from advlab.experiments.capacity import DEFAULT_LR, MODELS, defenses

    options = get_recipe(name).options
    assert (options["model"], options["model_options"]) == MODELS["resnet16"]
    assert options["defense"] == defense and options["defense_params"] == defenses(0.1)[defense]
    assert options["epochs"] == epochs
    assert options["lr"] == DEFAULT_LR and options["batch_size"] == 128 and options["adv_val_n"] == 500
    # the documented result is the committed cell's
    cell = json.loads((ROOT / "benchmarks" / "results" / "capacity"
                       / f"fashion-mnist-resnet16-{defense}-{epochs}ep" / "cell.json").read_text())
    measured = get_recipe(name).measured
    assert f"{100 * cell['clean_acc']:.1f} %" in measured
    assert f"{100 * cell['robust_acc']:.1f} %" in measured


def test_explicit_options_override_the_recipe():
    options = expand_recipe("fmnist-linf-0.1-fast", epochs=3, lr=None, seed=7,
                            defense_params={"noise_ratio": 1.5})
    assert options["epochs"] == 3 and options["seed"] == 7  # given: overrides / adds
    assert options["lr"] == get_recipe("fmnist-linf-0.1-fast").options["lr"]  # None: the recipe's
    assert options["defense_params"] == {"eps": 0.1, "clean_logits": False,
                                         "noise_ratio": 1.5}  # merged, same defense
    other = expand_recipe("fmnist-linf-0.1-fast", defense="trades", defense_params={"eps": 0.2})
    assert other["defense"] == "trades" and other["defense_params"] == {"eps": 0.2}
    assert "defense_params" not in expand_recipe("fmnist-linf-0.1-fast", defense="none")
    assert "model_options" not in expand_recipe("digits-linf-0.1", model="small_cnn")
    with pytest.raises(ValueError, match="unknown recipe 'fmnist-fast'.*available"):
        expand_recipe("fmnist-fast")


def test_the_digits_recipe_trains_in_seconds(tmp_path):
    run = train_run(tmp_path / "recipe", **expand_recipe("digits-linf-0.1", progress=False))
    config = run.result.config
    assert config["model_options"] == {"widths": [64]} and config["objective"]["name"] == "n-fgsm"
    assert len(run.result.history) == 4 and "adv_val_acc" in run.result.history[-1]
    assert run.test_acc > 0.8
    # the default selection adds nothing to the config: runs from before the option resume
    assert "select_within_se" not in config and "select_within_se" not in config["train_args"]


def _lrs(name: str, total: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = build_scheduler(optimizer, name, 0.2, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cyclic_and_multistep_schedules():
    cyclic = _lrs("cyclic", 10)  # Wong et al.: up to lr at 2/5 of training, down to 0
    assert cyclic[3] == pytest.approx(0.2) and max(cyclic) == pytest.approx(0.2)
    assert cyclic[0] == pytest.approx(0.05) and cyclic[-1] == pytest.approx(0.0)
    assert all(a < b for a, b in zip(cyclic[:4], cyclic[1:4])) and cyclic[4] > cyclic[5]
    multistep = _lrs("multistep", 8)  # Madry / Rice et al.: x 0.1 at 1/2, x 0.01 at 3/4
    assert multistep == pytest.approx([0.2] * 4 + [0.02] * 2 + [0.002] * 2)
    with pytest.raises(ValueError, match="schedule_factor knows"):
        schedule_factor("cosine", 10)
    with pytest.raises(ValueError, match="schedule"):
        _lrs("triangle", 4)


def test_train_command_with_a_recipe_and_an_override(tmp_path, monkeypatch):
    """``advlab train --recipe NAME`` expands the recipe; an option given explicitly wins."""
    import json

    from typer.testing import CliRunner

    from advlab.cli import app

    monkeypatch.setenv("ADVLAB_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "runs" / "r"
    done = CliRunner().invoke(app, ["train", "--recipe", "digits-linf-0.1", "--epochs", "1",
                                    "--eps", "0.05", "--n-train", "300", "--adv-val-n", "64",
                                    "--select-within-se", "1", "--out", str(out),
                                    "--no-progress"])
    assert done.exit_code == 0, done.output
    config = json.loads((out / "config.json").read_text())
    recipe = expand_recipe("digits-linf-0.1")
    assert config["objective"]["name"] == recipe["defense"]
    assert config["objective"]["params"]["eps"] == 0.05  # the explicit option
    assert config["model_options"] == recipe["model_options"]  # from the recipe
    assert config["select_within_se"] == 1.0 and config["train_args"]["select_within_se"] == 1.0
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["adv_val_acc_se"] > 0
    assert len(json.loads((out / "train_result.json").read_text())["events"]) >= 0
    info = CliRunner().invoke(app, ["info"])
    assert "digits-linf-0.1" in info.output and "fmnist-linf-0.1-fast" in info.output
