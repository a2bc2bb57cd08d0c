"""``advlab train``: train a model on a dataset with a defense, into a run directory.

    advlab train --dataset fashion-mnist --model small_cnn --epochs 2 --out runs/x
    torchrun --nproc_per_node=2 -m advlab train ...     (data-parallel; rank 0 writes)

The run directory gets what :func:`advlab.training.fit` writes plus ``train_result.json``; the
run is registered in the store next to it (``<runs root>/advlab.db``, the runs root being the
parent of ``--out``, else ``$ADVLAB_RUNS`` or ``./runs``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import echo, is_rank_zero, runs_root, seed_everything, setup_logging


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
    defense: Annotated[str, typer.Option(help="Training objective: none (standard training), ...")] = "none",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train a classifier (optionally with a robust-training defense) with checkpoints and resume."""
    setup_logging()
    from advlab.data import load_dataset
    from advlab.training import fit, get_objective

    objective = get_objective(defense)
    run_dir = Path(out) if out is not None else runs_root() / "-".join(
        _slug(part) for part in (dataset, model, defense))
    store_path = (run_dir.parent if out is not None else runs_root()) / "advlab.db"
    run_name = name or run_dir.name
    train_data, val_data, net = _data_and_model(dataset, model, seed, val_fraction, n_train,
                                                data_dir)
    info = train_data.info
    config = {"dataset": info.name, "model": model, "defense": objective.name,
              "val_fraction": val_fraction, "n_train": n_train,
              "data_dir": str(data_dir) if data_dir else None}
    started = time.perf_counter()
    result = fit(net, train_data, val_data=val_data, objective=objective, epochs=epochs,
                 batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                 schedule=schedule, seed=seed, device=device, run_dir=run_dir,
                 checkpoint_every=checkpoint_every, resume=resume, config=config,
                 progress=progress, store=store_path, run_name=run_name)
    if not is_rank_zero():
        return
    elapsed = time.perf_counter() - started
    test_acc = _test_accuracy(result.model, load_dataset(dataset, "test", data_dir=data_dir), device)
    summary = _record(store_path, run_name, run_dir, result, test_acc, elapsed)
    echo(f"run        {run_dir}  (store {store_path}, name {run_name!r})", bold=True)
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    if best is not None:
        echo(f"best epoch {result.best_epoch}: val_acc {best.get('val_acc', float('nan')):.4f}")
    echo(f"test acc   {test_acc:.4f}  ({len(result.history)} epochs, {summary['time_s']:.1f} s)")


def _data_and_model(dataset: str, model: str, seed: int, val_fraction: float,
                    n_train: int | None, data_dir: Path | None) -> tuple[Any, Any, Any]:
    """The train / validation splits and the freshly initialised model (seeded once here)."""
    from advlab.data import load_dataset
    from advlab.models import create_model

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    options: dict[str, Any] = {"data_dir": data_dir, "seed": seed, "val_fraction": val_fraction}
    train_data = load_dataset(dataset, "train", n=n_train, **options)
    val_data = load_dataset(dataset, "val", **options) if val_fraction > 0 else None
    info = train_data.info
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
    summary = {"test_acc": test_acc, "best_epoch": result.best_epoch,
               "epochs_done": len(result.history), "time_s": elapsed,
               "val_acc": (result.history[result.best_epoch - 1].get("val_acc")
                           if result.best_epoch else last.get("val_acc"))}
    with Store(store_path) as store:
        run = store.get_run(run_name)
        metadata = {**(run["metadata"] if run else {}), **summary}
        store.add_run(run_name, run_dir.resolve(), result.config, metadata)
        store.add_evaluation(run_name, "clean-accuracy", {"split": "test"},
                             {"accuracy": test_acc})
    atomic_write_json(run_dir / "train_result.json", {**summary, "run_name": run_name,
                                                      "store": str(store_path)})
    return summary
