"""``advlab info``: what this machine has -- versions, device, datasets found, models, attacks,
defenses (training objectives), runs."""

from __future__ import annotations

from pathlib import Path

import typer

from advlab.cli._common import echo, runs_root


def info(out: Path = typer.Option(None, "--out", help="Runs directory (default $ADVLAB_RUNS or ./runs).")) -> None:
    """Show versions, the compute device, the datasets found here, and the registered models,
    attacks and defenses."""
    import torch

    import advlab
    from advlab.attacks import ATTACKS
    from advlab.data import dataset_status
    from advlab.models import model_names
    from advlab.training import OBJECTIVES

    echo(f"advlab {advlab.__version__}  torch {torch.__version__}", bold=True)
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    echo(f"device auto -> {'cuda' if torch.cuda.is_available() else 'cpu'} (CUDA: {cuda}; CPU threads: {torch.get_num_threads()})")
    echo("\ndatasets:", bold=True)
    for name, status in dataset_status().items():
        echo(f"  {name:<14} {status}")
    echo("\nmodels:   " + ", ".join(model_names()))
    echo("attacks:  " + ", ".join(ATTACKS.names()))
    echo("\ndefenses (advlab train --defense NAME):", bold=True)
    for name in OBJECTIVES.names():
        echo(f"  {name:<14} {OBJECTIVES.metadata(name)['description']}")
    from advlab.training.recipes import RECIPES

    echo("\nrecipes (advlab train --recipe NAME; options given explicitly override it):", bold=True)
    for name in RECIPES.names():
        echo(f"  {name:<22} {RECIPES.metadata(name)['description']}")
    root = runs_root(out)
    db = root / "advlab.db"
    if db.exists():
        from advlab.store import Store

        with Store(db) as store:
            runs = store.list_runs()
            evaluations = store.get_evaluations()
        trained = {run["name"] for run in runs}
        api_only = sorted({e["run_name"] or "(unnamed)" for e in evaluations} - trained)
        echo(f"\nruns in {db}: {len(runs) + len(api_only)} ({len(runs)} trained here, "
             f"{len(api_only)} with evaluations only; {len(evaluations)} evaluations)")
        for run in runs[-10:]:
            echo(f"  {run['name']:<30} {run['path']}")
        for name in api_only[-10:]:
            echo(f"  {name:<30} (evaluations only)")
    else:
        echo(f"\nno results store yet at {db}")
