"""Loading what the evaluation commands work on: a run directory (or a bare model file) and
the test points of its dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class RunContext:
    """A model to analyse, where its results go, and the dataset it was trained on."""

    model: nn.Module
    name: str
    run_dir: Path
    dataset: str
    data_dir: str | None
    config: dict[str, Any]

    @property
    def store_path(self) -> Path:
        """The store next to the run (``<runs root>/advlab.db``), as ``advlab train`` uses."""
        return self.run_dir.parent / "advlab.db"


def load_run(run: Path | None, *, model_file: Path | None = None, dataset: str | None = None,
             data_dir: Path | None = None, device: str = "auto") -> RunContext:
    """Load ``run`` (a run directory) or ``model_file`` (a saved model + ``--dataset``)."""
    from advlab._utils import resolve_device
    from advlab.models import load_model

    if (run is None) == (model_file is None):
        raise ValueError("give either a run directory (advlab evaluate runs/x) or --model-file, not both")
    source = Path(run if run is not None else model_file)  # type: ignore[arg-type]
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist; train a model first (advlab train --out {source})")
    run_dir = source if source.is_dir() else source.parent
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    model = load_model(source, device=resolve_device(device))
    name_of_dataset = dataset or config.get("dataset") or model.advlab_metadata.get("dataset")
    if not name_of_dataset:
        raise ValueError(f"{source} does not record its dataset; pass --dataset")
    directory = str(data_dir) if data_dir else config.get("data_dir")
    return RunContext(model, run_dir.name, run_dir, name_of_dataset, directory, config)


def test_points(ctx: RunContext, n: int | None, device: torch.device | None = None,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` points of a seeded shuffle of the run's test split."""
    from advlab.data import load_dataset

    data = load_dataset(ctx.dataset, "test", data_dir=ctx.data_dir, n=n, seed=seed)
    target = device or next(ctx.model.parameters()).device
    return data.x.to(target), data.y.to(target)
