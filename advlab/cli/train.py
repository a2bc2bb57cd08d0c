"""``advlab train``: train a model on a dataset with a defense, into a run directory.

    advlab train --dataset fashion-mnist --model small_cnn --epochs 2 --out runs/x
    advlab train --defense pgd-at --eps 0.1 --steps 7 --param eps_ramp=0.3 --out runs/pgd
    advlab train --defense fgsm-mix --init runs/x --epochs 2 --out runs/x-ft   (fine-tuning)
    torchrun --nproc_per_node=2 -m advlab train ...     (data-parallel; rank 0 writes)

``--defense`` picks a registered objective (``advlab.training.OBJECTIVES``); its parameters
come from the common options (``--eps``, ``--steps``, ...: only those given are passed, the
others keep the paper defaults) and ``--param key=value`` for any other one (values read as
JSON: numbers, true/false, lists; else strings). With a defense, every epoch is validated
adversarially (``--adv-val``, on by default: APGD-CE on ``--adv-val-n`` validation points at the
defense's eps or ``--adv-val-eps``) and the run keeps the epoch with the best adversarial
validation accuracy as its model (Goodfellow et al. 2015); ``--patience`` stops early.

The run directory gets what :func:`advlab.training.fit` writes plus ``train_result.json``; the
run is registered in the store next to it (``<runs root>/advlab.db``, the runs root being the
parent of ``--out``, else ``$ADVLAB_RUNS`` or ``./runs``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import (
    echo,
    is_rank_zero,
    parse_key_values,
    runs_root,
    seed_everything,
    setup_logging,
)


def _slug(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def train(
    dataset: Annotated[str, typer.Option(help="Dataset name (advlab info lists them).")] = "fashion-mnist",
    model: Annotated[str, typer.Option(help="Model name: mlp, small_cnn, lenet, preact_resnet18, ...")] = "small_cnn",
    epochs: Annotated[int, typer.Option(help="Number of epochs.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Global batch size (split over torchrun processes).")] = 128,
    lr: Annotated[float, typer.Option(help="Learning rate (the peak for onecycle).")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or sgd (momentum 0.9).")] = "adam",
    schedule: Annotated[str, typer.Option(help="onecycle, cosine or constant (stepped per batch).")] = "onecycle",
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seeds the model init, the validation split and the data order.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of the training set held out for validation (0: none).")] = 0.1,
    n_train: Annotated[int | None, typer.Option(help="Train on a seeded random subset of this many samples.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset files are.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default <runs root>/<dataset>-<model>-<defense>).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name in the store (default: the run directory's name).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in the run directory from its checkpoint.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Also checkpoint every N optimiser steps (0: per epoch).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    defense: Annotated[str, typer.Option(help="Training objective: none, fgsm-mix, pgd-at, fgsm-rs, trades, cure, clip, noise.")] = "none",
    eps: Annotated[float | None, typer.Option(help="Defense: training radius (inputs in [0, 1]).")] = None,
    norm: Annotated[str | None, typer.Option(help="Defense: threat norm, linf or l2.")] = None,
    alpha: Annotated[float | None, typer.Option(help="fgsm-mix: weight of the clean loss (0.5).")] = None,
    steps: Annotated[int | None, typer.Option(help="pgd-at / trades / clip: inner steps.")] = None,
    step_size: Annotated[float | None, typer.Option(help="Defense: inner step size.")] = None,
    beta: Annotated[float | None, typer.Option(help="trades: weight of the KL term (6).")] = None,
    lam: Annotated[float | None, typer.Option(help="cure / clip: weight of the penalty.")] = None,
    h: Annotated[float | None, typer.Option(help="cure: finite-difference length.")] = None,
    sigma: Annotated[float | None, typer.Option(help="noise: noise scale.")] = None,
    eps_ramp: Annotated[float | None, typer.Option(help="Defense: fraction of training over which eps grows from 0.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Any other defense parameter, KEY=VALUE (repeatable).")] = None,
    init: Annotated[Path | None, typer.Option(help="Fine-tune: start from this run's model (its architecture; --model is ignored).")] = None,
    adv_val: Annotated[bool | None, typer.Option("--adv-val/--no-adv-val", help="Validate adversarially each epoch and keep the most robust epoch (default: on with a defense).")] = None,
    adv_val_eps: Annotated[float | None, typer.Option(help="Radius of the adversarial validation (default: the defense's eps).")] = None,
    adv_val_n: Annotated[int, typer.Option(help="Validation points attacked per epoch.")] = 500,
    patience: Annotated[int | None, typer.Option(help="Stop after this many epochs without a better (adversarial) validation accuracy.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train a classifier (optionally with a robust-training defense) with checkpoints and resume."""
    setup_logging()
    from advlab.data import load_dataset
    from advlab.training import fit, get_objective

    params = defense_params(param, eps=eps, norm=norm, alpha=alpha, steps=steps,
                            step_size=step_size, beta=beta, lam=lam, h=h, sigma=sigma,
                            eps_ramp=eps_ramp)
    objective = get_objective(defense, **params)
    train_data, val_data, net = _data_and_model(dataset, model, seed, val_fraction, n_train,
                                                data_dir, init)
    model_name = net.advlab_spec["name"] if init is not None else model
    run_dir = Path(out) if out is not None else runs_root() / "-".join(
        _slug(part) for part in (dataset, model_name, defense))
    store_path = (run_dir.parent if out is not None else runs_root()) / "advlab.db"
    run_name = name or run_dir.name
    info = train_data.info
    validation = _adversarial_validation(objective, val_data, adv_val, adv_val_eps, adv_val_n,
                                         seed)
    config = {"dataset": info.name, "model": model_name, "defense": objective.name,
              "val_fraction": val_fraction, "n_train": n_train,
              "data_dir": str(data_dir) if data_dir else None,
              "adv_val": validation[1] if validation else None}
    started = time.perf_counter()
    result = fit(net, train_data, val_data=val_data, objective=objective, epochs=epochs,
                 batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                 schedule=schedule, seed=seed, device=device, run_dir=run_dir,
                 checkpoint_every=checkpoint_every, resume=resume, config=config,
                 progress=progress, store=store_path, run_name=run_name,
                 epoch_end=validation[0] if validation else None,
                 select_metric="adv_val_acc" if validation else "val_acc",
                 early_stopping_patience=patience, init=init)
    if not is_rank_zero():
        return
    elapsed = time.perf_counter() - started
    test_acc = _test_accuracy(result.model, load_dataset(dataset, "test", data_dir=data_dir), device)
    summary = _record(store_path, run_name, run_dir, result, test_acc, elapsed)
    echo(f"run        {run_dir}  (store {store_path}, name {run_name!r})", bold=True)
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    if best is not None:
        extra = (f", adv_val_acc {best['adv_val_acc']:.4f}" if "adv_val_acc" in best else "")
        echo(f"best epoch {result.best_epoch}: val_acc {best.get('val_acc', float('nan')):.4f}"
             f"{extra}")
    for event in result.events:
        echo(f"event      epoch {event['epoch']}: {event['event']} ({event['detail']}); "
             f"{event['action']}")
    echo(f"test acc   {test_acc:.4f}  ({len(result.history)} epochs, {summary['time_s']:.1f} s)")


def defense_params(extra: list[str] | None, **common: Any) -> dict[str, Any]:
    """The defense parameters: the common options that were given, then ``KEY=VALUE`` pairs
    (values parsed as JSON when they parse, e.g. ``0.1``, ``true``, ``[0.5, 1.0]``)."""
    params = {key: value for key, value in common.items() if value is not None}
    for key, value in parse_key_values(extra).items():
        if key in params and params[key] != value:
            raise ValueError(f"defense parameter {key!r} is given twice ({params[key]!r} and "
                             f"{value!r})")
        params[key] = value
    return params


def _adversarial_validation(objective: Any, val_data: Any, enabled: bool | None,
                            eps: float | None, n: int,
                            seed: int) -> tuple[Any, dict[str, Any]] | None:
    """The adversarial-validation hook and its config entry, or None when off."""
    from advlab.threat import ThreatModel
    from advlab.training import adversarial_validation

    settings = getattr(objective.function, "settings", None) or {}
    if enabled is None:
        enabled = objective.name != "none"
    if not enabled:
        return None
    if val_data is None:
        raise ValueError("adversarial validation needs a validation split: use --val-fraction > 0 "
                         "or --no-adv-val")
    eps = eps if eps is not None else settings.get("eps")
    if eps is None:
        raise ValueError(f"give --adv-val-eps: the defense {objective.name!r} has no eps to "
                         "validate at (or use --no-adv-val)")
    threat = ThreatModel(settings.get("norm", "linf"), float(eps))
    hook = adversarial_validation(val_data, threat, n=n, seed=seed)
    return hook, {"norm": threat.norm, "eps": threat.eps, "n": n, "preset": "fast"}


def _data_and_model(dataset: str, model: str, seed: int, val_fraction: float,
                    n_train: int | None, data_dir: Path | None,
                    init: Path | None = None) -> tuple[Any, Any, Any]:
    """The train / validation splits and the model: freshly initialised (seeded once here) or,
    with ``init``, the model of that run (fit loads its weights again and records it)."""
    from advlab.data import load_dataset
    from advlab.models import create_model, load_model

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    options: dict[str, Any] = {"data_dir": data_dir, "seed": seed, "val_fraction": val_fraction}
    train_data = load_dataset(dataset, "train", n=n_train, **options)
    val_data = load_dataset(dataset, "val", **options) if val_fraction > 0 else None
    info = train_data.info
    if init is not None:
        net = load_model(init).train()
        spec = getattr(net, "advlab_spec", {})
        shape, classes = tuple(spec.get("input_shape", ())), spec.get("num_classes")
        if shape != tuple(info.input_shape) or classes != info.num_classes:
            raise ValueError(f"--init {init}: its model takes {shape} inputs and {classes} "
                             f"classes, but {info.name} has {tuple(info.input_shape)} and "
                             f"{info.num_classes}")
        return train_data, val_data, net
    seed_everything(seed)  # the model initialisation; fit draws its own randomness from seed
    net = create_model(model, info.num_classes, info.input_shape, normalize=(info.mean, info.std))
    return train_data, val_data, net


def _test_accuracy(model: Any, test_data: Any, device: str) -> float:
    """Clean accuracy of ``model`` on a Dataset, batched on ``device``."""
    import torch

    from advlab._utils import resolve_device

    target = resolve_device(device)
    model = model.to(target).eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_data.loader(batch_size=1024):
            correct += int((model(x.to(target)).argmax(dim=1).cpu() == y).sum())
    return correct / len(test_data)


def _record(store_path: Path, run_name: str, run_dir: Path, result: Any, test_acc: float,
            elapsed: float) -> dict[str, Any]:
    """Store the test accuracy with the run and write ``train_result.json``."""
    from advlab._utils import atomic_write_json
    from advlab.store import Store

    last = result.history[-1] if result.history else {}
    best = result.history[result.best_epoch - 1] if result.best_epoch else last
    summary = {"test_acc": test_acc, "best_epoch": result.best_epoch,
               "epochs_done": len(result.history), "time_s": elapsed,
               "val_acc": best.get("val_acc"), "adv_val_acc": best.get("adv_val_acc"),
               "events": result.events}
    with Store(store_path) as store:
        run = store.get_run(run_name)
        metadata = {**(run["metadata"] if run else {}), **summary}
        store.add_run(run_name, run_dir.resolve(), result.config, metadata)
        store.add_evaluation(run_name, "clean-accuracy", {"split": "test"},
                             {"accuracy": test_acc})
    atomic_write_json(run_dir / "train_result.json", {**summary, "run_name": run_name,
                                                      "store": str(store_path)})
    return summary
