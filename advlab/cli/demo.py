"""``advlab demo``: the main job, end to end, on the default dataset.

Trains (or reuses) a standard ``small_cnn`` on Fashion-MNIST and reports its test accuracy.
``--quick`` uses the bundled 8x8 digits and needs no data files at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from advlab.cli._common import echo, runs_root, setup_logging


def demo(
    dataset: Annotated[str, typer.Option(help="fashion-mnist (default) or digits (no data files needed).")] = "fashion-mnist",
    quick: Annotated[bool, typer.Option(help="A two-minute version on digits.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default 2; 8 with --quick).")] = None,
    out: Annotated[Path | None, typer.Option(help="Runs directory (default $ADVLAB_RUNS or ./runs).")] = None,
    retrain: Annotated[bool, typer.Option(help="Train again even if the demo run exists.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Run the main job: train a standard classifier and report how accurate it is."""
    setup_logging()
    from advlab.cli.train import train

    dataset = "digits" if quick else dataset
    epochs = epochs or (8 if dataset == "digits" else 2)
    root = runs_root(out)
    run_dir = root / f"demo-{dataset}-standard"
    echo(f"== advlab demo on {dataset} (runs in {root}) ==", bold=True)
    echo("stage 1/1: standard training of small_cnn")
    if retrain or not (run_dir / "train_result.json").exists():
        train(dataset=dataset, model="small_cnn", epochs=epochs, batch_size=128,
              lr=3e-3 if dataset == "digits" else 1e-3, optimizer="adam", schedule="onecycle",
              weight_decay=0.0, seed=seed, val_fraction=0.1, n_train=None, data_dir=None,
              out=run_dir, name=run_dir.name, resume=False, checkpoint_every=0, device=device,
              defense="none", progress=progress)
    else:
        echo(f"reusing {run_dir} (--retrain to train again)")
    summary = json.loads((run_dir / "train_result.json").read_text())
    echo(f"\nstandard small_cnn on {dataset}: test accuracy {summary['test_acc']:.2%}", bold=True)
    echo(f"run directory: {run_dir}")
