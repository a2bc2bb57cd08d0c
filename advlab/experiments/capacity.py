"""The capacity study: robust accuracy against model width x defense x CPU budget.

Goodfellow's advice ("you need more model capacity" for adversarial training) and Madry et al.
2018's finding that robustness grows with capacity, measured on Fashion-MNIST at Linf eps 0.1:

* models (:data:`MODELS`): ``small_cnn`` at x1 / x2 / x4 its channels and hidden units and one
  wider, deeper zoo model (``preact_resnet18`` at width 16); :data:`QUICK_MODELS` are the tiny
  widths of the digits pipeline check;
* defenses (:func:`defenses`): ``fgsm-rs`` (Wong et al. 2020), ``n-fgsm`` (de Jorge et al.
  2022), ``trades`` (Zhang et al. 2019, 5 steps), ``pgd-at`` (Madry et al. 2018, PGD-10);
* budgets: epoch counts; the CPU budget of a cell is what it *measured*.

A cell trains with :func:`advlab.experiments.runs.train_run` into ``<cache>/<cell>``
(:func:`cell_dir`): a finished cell (``cell.json``) is reused, a killed one resumes from its
checkpoint. :func:`frontier` is the Pareto frontier (robust accuracy against CPU time) and
:func:`capacity_differences` the paired widest - narrowest ``small_cnn`` differences.
Tables, findings and the plot: :mod:`advlab.experiments.capacity_report`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advlab._checks import check_int
from advlab._utils import atomic_write_json

logger = logging.getLogger(__name__)

Cell = dict[str, Any]

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "x1": ("small_cnn", {"channels": [32, 64], "hidden": 128}),
    "x2": ("small_cnn", {"channels": [64, 128], "hidden": 256}),
    "x4": ("small_cnn", {"channels": [128, 256], "hidden": 512}),
    "resnet16": ("preact_resnet18", {"width": 16}),
}
QUICK_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "x1": ("small_cnn", {"channels": [8, 16], "hidden": 32}),
    "x2": ("small_cnn", {"channels": [16, 32], "hidden": 64}),
}


#: the study's peak learning rate; a cell trained at another one carries it in its name
DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class CapacityConfig:
    """The options every cell of a study shares (``benchmarks/capacity.py``'s defaults).

    ``quick`` selects :data:`QUICK_MODELS` and skips the evaluation's sanity checks;
    ``threads`` (when not ``None``) is set with ``torch.set_num_threads`` before training;
    ``check_attack`` is the probe of the fast defenses' catastrophic-overfitting watch
    (:data:`WATCHED` only; ``"apgd-ce"`` cells carry ``-watch-apgd-ce`` in their names).
    """

    cache: str | Path = "runs/benchmarks/capacity"
    dataset: str = "fashion-mnist"
    eps: float = 0.1
    lr: float = DEFAULT_LR
    eps_ramp: float = 0.0
    n_train: int | None = None
    adv_val_n: int = 500
    preset: str = "standard"
    schedule: str = "onecycle"
    ema_decay: float | None = None
    check_attack: str = "pgd"
    seed: int = 0
    device: str = "cpu"
    data_dir: str | Path | None = None
    threads: int | None = None
    quick: bool = False


def defenses(eps: float, eps_ramp: float = 0.0) -> dict[str, dict[str, Any]]:
    """The defenses and their parameters at ``eps`` (benchmarks/defenses.py's budgets); with
    ``eps_ramp`` > 0 every one grows eps linearly over that fraction of training."""
    ramp = {"eps_ramp": eps_ramp} if eps_ramp > 0 else {}
    return {"fgsm-rs": {"eps": eps, "clean_logits": False, **ramp},
            "n-fgsm": {"eps": eps, "clean_logits": False, **ramp},
            "trades": {"eps": eps, "steps": 5, "beta": 6.0, **ramp},
            "pgd-at": {"eps": eps, "steps": 10, "clean_logits": False, **ramp}}


#: the study's defenses with a catastrophic-overfitting watch (``check_attack`` applies to them)
WATCHED = ("fgsm-rs", "n-fgsm")


def defense_params(config: CapacityConfig, defense: str) -> dict[str, Any]:
    """The parameters of ``defense`` in this study (a new dict); a clear error for an unknown
    one, or for a watch probe other than PGD on a defense without the watch."""
    table = defenses(config.eps, config.eps_ramp)
    if defense not in table:
        raise ValueError(f"unknown capacity defense {defense!r}; choose from {', '.join(table)}")
    params = dict(table[defense])
    if config.check_attack != "pgd":
        if defense not in WATCHED:
            raise ValueError(f"{defense} has no catastrophic-overfitting watch; a check attack "
                             f"applies to {', '.join(WATCHED)} only")
        params["check_attack"] = config.check_attack
    return params


def model_spec(config: CapacityConfig, model_key: str) -> tuple[str, dict[str, Any]]:
    """``(architecture, options)`` of ``model_key``; a clear error for an unknown key."""
    table = QUICK_MODELS if config.quick else MODELS
    if model_key not in table:
        raise ValueError(f"unknown capacity model {model_key!r}; choose from {', '.join(table)}")
    return table[model_key]


def cell_dir(config: CapacityConfig, model_key: str, defense: str, epochs: int) -> Path:
    """``<cache>/<dataset>-<model>-<defense>-<epochs>ep[-<schedule>][-ema<decay>][-lr<lr>][-ramp<f>]
    [-watch-<attack>]``: every option that changes what a cell trains is in its name, so a reused
    ``cell.json`` is always the same experiment (the defaults, onecycle, lr 1e-3, no eps ramp and
    the PGD watch, add nothing)."""
    extra = "".join(f"-{part}" for part in _options(config.schedule, config.ema_decay, config.lr,
                                                    config.eps_ramp, config.check_attack))
    return Path(config.cache) / f"{config.dataset}-{model_key}-{defense}-{epochs}ep{extra}"


def _options(schedule: str, ema_decay: float | None, lr: float, eps_ramp: float,
             check_attack: str) -> list[str]:
    """The training options that differ from the study's defaults, as name parts."""
    return ([schedule] if schedule != "onecycle" else []) + (
        [f"ema{ema_decay:g}"] if ema_decay else []) + (
        [f"lr{lr:g}"] if lr != DEFAULT_LR else []) + (
        [f"ramp{eps_ramp:g}"] if eps_ramp > 0 else []) + (
        [f"watch-{check_attack}"] if check_attack != "pgd" else [])


def variant(cell: Cell) -> str:
    """A cell's non-default training options (``"lr0.002"``, ``"cyclic ema0.999"``), or ``""``.

    Cells are compared (paired differences, width findings) only within one variant; a cell
    saved before it recorded its ``lr`` (``eps_ramp``, ``check_attack``) was trained at
    :data:`DEFAULT_LR` (without a ramp, with the PGD watch).
    """
    return " ".join(_options(cell.get("schedule", "onecycle"), cell.get("ema_decay"),
                             cell.get("lr", DEFAULT_LR), cell.get("eps_ramp", 0.0),
                             cell.get("check_attack", "pgd")))


def cell_key(cell: Cell) -> tuple[str, str, int, str]:
    """``(model, defense, epochs, variant)``: what identifies a cell within one study."""
    return cell["model"], cell["defense"], cell["epochs"], variant(cell)


def train_cell(config: CapacityConfig, model_key: str, defense: str, epochs: int) -> Cell:
    """Train (or resume) one cell; its training figures and the model under ``"_model"``."""
    from advlab.experiments.runs import train_run

    model, options = model_spec(config, model_key)
    params = defense_params(config, defense)
    run_dir = cell_dir(config, model_key, defense, epochs)
    resumed = (run_dir / "checkpoint.pt").exists()
    load_before, cpu_before, wall_before = os.getloadavg(), time.process_time(), time.perf_counter()
    run = train_run(run_dir, dataset=config.dataset, model=model, model_options=options,
                    defense=defense, defense_params=params, epochs=epochs,
                    lr=config.lr, batch_size=128, schedule=config.schedule,
                    ema_decay=config.ema_decay, seed=config.seed, device=config.device,
                    n_train=config.n_train, data_dir=config.data_dir, resume=True,
                    checkpoint_every=100, adv_val_n=config.adv_val_n, progress=False)
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    if resumed:  # the earlier process's time is lost: its epochs' times, at this cell's CPU rate
        epoch_time = sum(r["time_s"] for r in run.result.history)
        cpu, wall = cpu * epoch_time / max(wall, 1e-9), epoch_time
    best = run.result.history[run.result.best_epoch - 1]
    return {"model": model_key, "architecture": model, "model_options": options,
            "defense": defense, "epochs": epochs, "lr": config.lr, "eps_ramp": config.eps_ramp,
            "schedule": config.schedule, "check_attack": config.check_attack,
            "ema_decay": config.ema_decay, "run_dir": str(run_dir), "resumed": resumed,
            "train_wall_s": wall, "train_cpu_s": cpu, "threads": torch.get_num_threads(),
            "load_before": list(load_before), "load_after": list(os.getloadavg()),
            "best_epoch": run.result.best_epoch, "adv_val_acc": best.get("adv_val_acc"),
            "events": run.result.events, "_model": run.result.model}


def evaluate_cell(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  config: CapacityConfig) -> Cell:
    """Clean and robust accuracy (``config.preset``) with 95 % Clopper-Pearson intervals.

    ``x``: ``(n, ...)`` held-out test inputs, ``y``: ``(n,)`` labels; the per-point robust
    outcomes (``robust_correct``, n booleans) feed the paired differences.
    """
    from advlab import ThreatModel
    from advlab.evaluation import evaluate
    from advlab.stats import clopper_pearson_interval

    started = time.perf_counter()
    result = evaluate(model.eval(), x, y, ThreatModel("linf", config.eps), attacks=config.preset,
                      sanity=not config.quick, seed=config.seed, device=config.device)
    n = len(y)
    clean_k, robust_k = int(result.clean_correct.sum()), int(result.robust_correct.sum())
    return {"n_test": n, "preset": config.preset, "eval_s": time.perf_counter() - started,
            "clean_acc": clean_k / n, "clean_ci": clopper_pearson_interval(clean_k, n),
            "robust_acc": robust_k / n, "robust_ci": clopper_pearson_interval(robust_k, n),
            "robust_correct": [bool(v) for v in result.robust_correct.tolist()],
            "warnings": [w.get("code", "?") for w in result.warnings]}


def step_cost(config: CapacityConfig, model_key: str, defense: str, *, steps: int = 20,
              warmup: int = 2, batch_size: int = 128) -> Cell:
    """The measured cost of ``steps`` training steps of a cell and its *projected* epoch cost.

    Times :func:`advlab.training.fit` on the first ``steps`` batches of the cell's training
    split (one epoch, no validation, the catastrophic-overfitting watch off: it runs once an
    epoch, not once a step) after ``warmup`` untimed batches: a plan for the cells that may be
    too costly to train on the machine at hand. The projection multiplies the step
    cost by the steps of a full epoch and leaves out validation and the evaluation: it is a
    lower bound on a cell's cost, never a cell.

    Returns ``model``, ``defense``, ``threads``, ``steps``, ``wall_s_per_step``,
    ``cpu_s_per_step``, ``steps_per_epoch`` and ``epoch_wall_min`` / ``epoch_cpu_min``.
    """
    import inspect

    from advlab.experiments.runs import _data_and_model
    from advlab.training import OBJECTIVES, fit, get_objective

    check_int("steps", steps)
    check_int("warmup", warmup, minimum=0)
    model, options = model_spec(config, model_key)
    params = defense_params(config, defense)
    if "check" in inspect.signature(OBJECTIVES.get(defense)).parameters:
        params["check"] = False
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    train, _, net = _data_and_model(config.dataset, model, config.seed, 0.1, None,
                                    n_train=config.n_train, data_dir=config.data_dir,
                                    model_options=options)
    n = (warmup + steps) * batch_size
    if n > len(train):
        raise ValueError(f"{warmup + steps} batches of {batch_size} need {n} training points; "
                         f"{config.dataset} has {len(train)}")
    x, y = train.x[:n], train.y[:n]
    split = warmup * batch_size

    def timed(xs: torch.Tensor, ys: torch.Tensor) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        fit(net, (xs, ys), objective=get_objective(defense, **params), epochs=1,
            batch_size=batch_size, lr=config.lr, schedule=config.schedule, seed=config.seed,
            device=config.device, progress=False, ema_decay=config.ema_decay)
        return time.perf_counter() - wall, time.process_time() - cpu

    if warmup:
        timed(x[:split], y[:split])
    wall, cpu = timed(x[split:], y[split:])
    per_epoch = math.ceil(len(train) / batch_size)
    return {"model": model_key, "defense": defense, "threads": torch.get_num_threads(),
            "steps": steps, "wall_s_per_step": wall / steps, "cpu_s_per_step": cpu / steps,
            "steps_per_epoch": per_epoch, "epoch_wall_min": wall / steps * per_epoch / 60,
            "epoch_cpu_min": cpu / steps * per_epoch / 60, "machine": machine()}


def run_cell(config: CapacityConfig, model_key: str, defense: str, epochs: int,
             data: tuple[torch.Tensor, torch.Tensor]) -> Cell:
    """One cell's figures, reused from ``cell.json`` when it has the same n and preset."""
    cache = cell_dir(config, model_key, defense, epochs) / "cell.json"
    if cache.exists():
        cell = json.loads(cache.read_text())
        if _measured_as(cell, len(data[1]), config.preset):
            logger.info("reusing %s", cache)
            return cell
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    cell = train_cell(config, model_key, defense, epochs)
    cell.update(evaluate_cell(cell.pop("_model"), *data, config))
    cell["machine"] = machine()
    atomic_write_json(cache, cell)
    return cell


def machine() -> dict[str, Any]:
    """Where a cell was measured: CPU model, logical CPUs, torch version and the date (UTC).

    Cells accumulate over machines (a committed ``cell.json`` is reused on another one), so each
    says which machine its times come from.
    """
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def saved_cells(config: CapacityConfig, n_test: int) -> list[Cell]:
    """Every finished cell under ``config.cache`` of ``config.dataset`` measured on ``n_test``
    points with ``config.preset`` (whatever its model, defense, budget or options), by name.

    The cells of a study accumulate over runs and machines; this is the study so far.
    """
    cells = []
    for path in sorted(Path(config.cache).glob(f"{config.dataset}-*/cell.json")):
        cell = json.loads(path.read_text())
        if _measured_as(cell, n_test, config.preset):
            cells.append(cell)
    return cells


def _measured_as(cell: Cell, n_test: int, preset: str) -> bool:
    """Whether a saved cell was evaluated on ``n_test`` points with ``preset`` (reusable)."""
    return cell.get("n_test") == n_test and cell.get("preset") == preset


def held_out_points(config: CapacityConfig, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_test`` held-out test points ``(x, y)`` (never trained or selected on)."""
    from advlab.data import load_dataset

    test = load_dataset(config.dataset, "test", data_dir=config.data_dir)
    n = min(n_test, len(test))
    return test.x[:n], test.y[:n]


def run_study(config: CapacityConfig, *, model_keys: Iterable[str], defense_names: Iterable[str],
              epochs: Iterable[int], n_test: int,
              on_cell: Callable[[Cell], None] | None = None) -> list[Cell]:
    """Every cell (budget-major, then defense, then model), trained or reused from the cache.

    ``on_cell`` is called with each cell as soon as it is done (progress output).
    """
    from advlab.data import load_dataset

    Path(config.cache).mkdir(parents=True, exist_ok=True)
    data = held_out_points(config, n_test)
    load_dataset(config.dataset, "train", data_dir=config.data_dir)  # one-time costs out of cell 1
    model_keys, defense_names = list(model_keys), list(defense_names)
    cells = []
    for budget in epochs:
        for defense in defense_names:
            for model_key in model_keys:
                cell = run_cell(config, model_key, defense, int(budget), data)
                logger.info("%s %s %d ep: clean %.1f%% robust %.1f%% %.2f CPU-min", model_key,
                            defense, budget, 100 * cell["clean_acc"], 100 * cell["robust_acc"],
                            cell["train_cpu_s"] / 60)
                cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
    return cells


def frontier(cells: list[Cell]) -> list[Cell]:
    """The Pareto frontier: cells no other cell beats in both CPU time and robust accuracy.

    Ordered by CPU time; ties in time keep the most robust cell only.
    """
    ordered = sorted(cells, key=lambda c: (c["train_cpu_s"], -c["robust_acc"]))
    best, out = -1.0, []
    for cell in ordered:
        if cell["robust_acc"] > best:
            out.append(cell)
            best = cell["robust_acc"]
    return out


def paired_difference(a: list[bool], b: list[bool], scale: float = 1.0) -> tuple[float, float, float]:
    """``mean(a) - scale * mean(b)`` on the same n points with a 95 % normal (paired) interval.

    ``scale`` below 1 tests a share: ``scale=0.95`` asks whether ``a`` reaches 95 % of ``b``.
    """
    n = len(a)
    if n == 0:
        raise ValueError("paired_difference needs at least one point")
    diffs = [int(u) - scale * int(v) for u, v in zip(a, b, strict=True)]
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def difference_text(a: list[bool], b: list[bool]) -> str:
    """``+x.x points [lo, hi] (n N, paired) -> verdict`` for robust ``a - b`` on the same points:
    "a difference" only when the 95 % interval of :func:`paired_difference` excludes 0."""
    mean, lo, hi = paired_difference(a, b)
    verdict = "a difference" if lo > 0 or hi < 0 else "no difference shown"
    return (f"{100 * mean:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] (n {len(a)}, paired) "
            f"-> {verdict}")


def width_keys(cells: list[Cell]) -> list[str]:
    """The ``small_cnn`` width keys (``x1``, ``x2``, ...) present, narrowest first."""
    return sorted({c["model"] for c in cells if c["model"].startswith("x") and c["model"][1:].isdigit()},
                  key=lambda k: int(k[1:]))


def capacity_differences(cells: list[Cell]) -> list[dict[str, Any]]:
    """Paired robust-accuracy difference widest - narrowest ``small_cnn`` per defense and budget.

    One row per (defense, epochs, :func:`variant`) with two widths or more, the widest and the
    narrowest of that group: ``difference`` and its 95 % ``ci`` (fractions),
    ``n`` and ``verdict`` (``"agrees"`` when the interval lies above 0, ``"disagrees"`` below 0,
    else ``"undecided"``), and the CPU-time ratio.
    """
    rows = []
    for defense, budget, options in sorted({cell_key(c)[1:] for c in cells}):
        group = {c["model"]: c for c in cells if cell_key(c)[1:] == (defense, budget, options)}
        keys = width_keys(list(group.values()))
        if len(keys) < 2:
            continue
        wide, narrow = group[keys[-1]], group[keys[0]]
        mean, lo, hi = paired_difference(wide["robust_correct"], narrow["robust_correct"])
        rows.append({"defense": defense, "epochs": budget, "variant": options,
                     "wide": keys[-1], "narrow": keys[0],
                     "difference": mean, "ci": [lo, hi], "n": len(wide["robust_correct"]),
                     "verdict": "agrees" if lo > 0 else ("disagrees" if hi < 0 else "undecided"),
                     "cpu_ratio": wide["train_cpu_s"] / max(narrow["train_cpu_s"], 1e-9)})
    return rows
