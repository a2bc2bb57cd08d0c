"""Named training recipes: a model, a defense with its parameters, a schedule and a budget.

A recipe is a set of :func:`advlab.experiments.runs.train_run` options with documentation: what
it is for, the CPU budget it was designed for and its *measured* result (or ``"not yet
measured"``: a recipe's expected figures are estimates until a run on held-out test points
says otherwise).

    from advlab.training.recipes import expand_recipe, recipe_names
    options = expand_recipe("fmnist-linf-0.1-fast", epochs=5)   # explicit options override
    train_run("runs/fast", **options)

``advlab train --recipe NAME`` expands the recipe the same way, the command's explicit options
overriding it; ``advlab info`` lists :func:`recipe_names` with their descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advlab.registry import Registry

NOT_MEASURED = "not yet measured"


@dataclass(frozen=True)
class Recipe:
    """A documented set of training options (the keywords of ``train_run``).

    Attributes:
        name: the registry name.
        description: one line: what the recipe is for.
        options: ``train_run`` keywords (dataset, model, model_options, defense,
            defense_params, epochs, lr, batch_size, optimizer, schedule, ema_decay, ...).
        budget_minutes: the training time (wall minutes on 2 CPU cores, the issue targets'
            unit; CPU-minutes are about twice that) the recipe is designed to fit.
        expected: how long it should take and why these settings (an estimate).
        measured: the measured result with its command and date, or ``"not yet measured"``.
    """

    name: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    budget_minutes: float | None = None
    expected: str = ""
    measured: str = NOT_MEASURED


#: name -> :class:`Recipe`, with metadata ``description``.
RECIPES: Registry[Recipe] = Registry("recipe")


def register_recipe(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` under its name."""
    return RECIPES.add(recipe.name, recipe, replace=replace, description=recipe.description)


def recipe_names() -> list[str]:
    """The registered recipe names, sorted."""
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (an error listing the recipes otherwise)."""
    return RECIPES.get(name)


def expand_recipe(name: str, **explicit: Any) -> dict[str, Any]:
    """The ``train_run`` options of recipe ``name``, with every explicit option that is not
    None overriding the recipe's.

    ``defense_params`` are merged key by key when the defense stays the recipe's (an explicit
    ``defense_params={"eps": 0.2}`` changes eps and keeps the other parameters); an explicit
    *other* ``defense`` drops the recipe's parameters (they belong to its defense), and likewise
    an explicit other ``model`` drops the recipe's ``model_options``. Returns a new dict.
    """
    recipe = get_recipe(name)
    options = {key: _copy(value) for key, value in recipe.options.items()}
    given = {key: value for key, value in explicit.items() if value is not None}
    if "defense" in given and given["defense"] != options.get("defense"):
        options.pop("defense_params", None)
    if "model" in given and given["model"] != options.get("model"):
        options.pop("model_options", None)
    if "defense_params" in given and "defense_params" in options:
        given["defense_params"] = {**options["defense_params"], **given["defense_params"]}
    options.update(given)
    return options


def describe_recipe(name: str) -> list[str]:
    """Lines describing a recipe: its description, options, budget, expectation, measurement."""
    recipe = get_recipe(name)
    options = ", ".join(f"{k}={v!r}" for k, v in recipe.options.items())
    budget = (f"{recipe.budget_minutes:g} min of training on 2 cores" if recipe.budget_minutes
              else "none")
    return [f"{recipe.name}: {recipe.description}", f"  options:  {options}",
            f"  budget:   {budget}", f"  expected: {recipe.expected}",
            f"  measured: {recipe.measured}"]


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


register_recipe(Recipe(
    name="digits-linf-0.1",
    description="seconds: N-FGSM on 8x8 digits at Linf 0.1 (tests, demos, smoke runs)",
    options={"dataset": "digits", "model": "mlp", "model_options": {"widths": [64]},
             "defense": "n-fgsm", "defense_params": {"eps": 0.1, "check_size": 64},
             "epochs": 4, "lr": 1e-2, "batch_size": 64, "optimizer": "adam",
             "schedule": "onecycle", "adv_val_n": 100},
    budget_minutes=1,
    expected="a few seconds on one core; beats standard training under PGD at eps 0.1 "
             "(tests/test_recipes.py)"))

register_recipe(Recipe(
    name="fmnist-linf-0.1-fast",
    description="the best Fashion-MNIST Linf 0.1 model within 30 min of training on 2 cores (N-FGSM, preact_resnet18 width 16)",
    options={"dataset": "fashion-mnist", "model": "preact_resnet18", "model_options": {"width": 16},
             "defense": "n-fgsm", "defense_params": {"eps": 0.1, "clean_logits": False},
             "epochs": 5, "lr": 1e-3, "batch_size": 128, "optimizer": "adam",
             "schedule": "onecycle", "adv_val_n": 500},
    budget_minutes=30,
    expected="15-18 min on 2 idle cores (measured on two machines); the capacity study's cell resnet16 / n-fgsm / 5 epochs "
             "(benchmarks/results/capacity/): the most robust cell measured, ahead of small_cnn "
             "x1 and x2 and of TRADES, in less CPU time than x2 or TRADES",
    measured="2026-12-02, the identical capacity cell (benchmarks/capacity.py --models resnet16 "
             "--defenses n-fgsm --epochs 5, 2-core AMD EPYC VM, 2 threads): 17.6 min wall (34.9 "
             "CPU-min), best epoch 5 of 5; first 1000 test points, advlab standard: clean 86.1 % "
             "[83.8, 88.2], robust 74.1 % [71.3, 76.8]. 2026-12-03, advlab train --recipe "
             "fmnist-linf-0.1-fast (2-core Intel Xeon VM): 14.6 min, clean 85.2 % on all 10 000 "
             "test images; first 200 test points: reference AutoAttack (pyautoattack 0.2.0) "
             "73.0 % [66.3, 79.0], advlab standard 73.0 %, the same points broken. Issue targets "
             "(>= 87 % clean, >= 75 % AutoAttack-robust, <= 30 min): clean missed, robust "
             "undecided (the intervals contain 75 %, every point estimate lies below it), time met"))

register_recipe(Recipe(
    name="fmnist-linf-0.1-best",
    description="the best Fashion-MNIST Linf 0.1 model measured within 2 h of training on 2 cores (PGD-10 AT, preact_resnet18 width 16)",
    options={"dataset": "fashion-mnist", "model": "preact_resnet18", "model_options": {"width": 16},
             "defense": "pgd-at", "defense_params": {"eps": 0.1, "steps": 10, "clean_logits": False},
             "epochs": 6, "lr": 1e-3, "batch_size": 128, "optimizer": "adam",
             "schedule": "onecycle", "adv_val_n": 500},
    budget_minutes=120,
    expected="~75-95 min on 2 idle cores, from measured epoch costs (resnet16 N-FGSM: 2.6-3.5 "
             "min per epoch; a PGD-10 epoch costs 4.5 N-FGSM epochs on small_cnn); it is the "
             "capacity cell resnet16 / pgd-at / 6 epochs (benchmarks/capacity.py --models "
             "resnet16 --defenses pgd-at --epochs 6 measures it). Why these settings: in the "
             "capacity study (benchmarks/results/capacity/, 1000 test points, paired) the deeper "
             "resnet16 is +5.5 points over small_cnn x1 under N-FGSM, PGD-AT still gains from "
             "2 to 5 epochs (+3.1) while N-FGSM on resnet16 did not gain from 5 to 10 (-2.1 for the "
             "selected epoch; its last epoch +2.5 [-0.4, +5.4] on 200 points, undecided), "
             "and the most robust model measured before it (resnet16 N-FGSM 5 epochs, 74.1 %) was "
             "4.4 points short of the 78.5 % target",
    measured="2026-12-04, the identical capacity cell (benchmarks/capacity.py --models resnet16 "
             "--defenses pgd-at --epochs 6, 2-core AMD EPYC VM, 2 threads): 84.5 min wall (162.1 "
             "CPU-min, ~20 min of it with a test run sharing the machine), best epoch 4 of 6 "
             "(adversarial validation 70.2, 74.6, 74.8, 77.0, 73.8, 73.2 %); clean 85.2 % on all "
             "10 000 test images; first 1000 test points, advlab standard: clean 85.9 % [83.6, "
             "88.0], robust 76.5 % [73.7, 79.1]; first 200: reference AutoAttack (pyautoattack "
             "0.2.0) 76.5 % [70.0, 82.2], advlab standard 76.5 %, the same points broken. Issue "
             "targets (>= 85 % clean, >= 78.5 % AutoAttack-robust, <= 2 h): clean and robust "
             "undecided (both intervals contain the target; the robust point estimates lie 2 "
             "points below it), time met"))
