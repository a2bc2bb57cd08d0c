"""Loading what the evaluation commands work on: a model in any form (a run directory, a saved
advlab model, a factory + weights, TorchScript, ``torch.export``) and the points to evaluate it
on (the run's test split, ``--dataset NAME`` or ``--data PATH``), checked against each other
with one forward pass before any work."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.cli._common import ModelOptions


@dataclass
class RunContext:
    """A model to analyse, where its results go, and the data to evaluate it on.

    ``split_label`` is ``"test"`` only when the points are a test split the model was not
    trained or selected on (a dataset's test set, an npz's ``x_test``, or the held-out split
    recorded by an advlab run); otherwise a description such as ``"points"``.
    """

    model: nn.Module
    name: str
    run_dir: Path
    dataset: str
    data_dir: str | None
    config: dict[str, Any]
    data_options: dict[str, Any] = field(default_factory=dict)
    split_label: str = "test"
    split_note: str = ""

    @property
    def store_path(self) -> Path:
        """The store next to the run (``<runs root>/advlab.db``), as ``advlab train`` uses."""
        return self.run_dir.parent / "advlab.db"



@dataclass
class DataOptions:
    """Where the points come from: ``--dataset NAME`` or ``--data PATH`` (+ ``--image-size``)."""

    dataset: str | None = None
    data: Path | None = None
    data_dir: Path | None = None
    image_size: int | None = None


def _run_directory(source: Path) -> Path | None:
    """The run directory of ``source`` when it is (or is a file in) one written by advlab."""
    directory = source if source.is_dir() else source.parent
    return directory if (directory / "config.json").exists() or (directory / "model.json").exists() else None


def _model_name(spec: str, model: nn.Module) -> str:
    source = getattr(model, "advlab_source", {})
    if source.get("kind") == "factory":
        where, _, name = spec.rpartition(":")
        return f"{Path(where).stem if where.endswith('.py') else where.rsplit('.', 1)[-1]}-{name}"
    return Path(spec).stem or "model"


def load_run(run: Path | str | None, *, model_file: Path | None = None, dataset: str | None = None,
             data_dir: Path | None = None, device: str = "auto",
             model_options: ModelOptions | None = None, data: Path | None = None,
             image_size: int | None = None) -> RunContext:
    """Load MODEL ``run`` (any form, see :func:`advlab.models.load_any_model`; ``model_file`` is
    the older spelling) and resolve the data (the run's, or ``dataset`` / ``data``)."""
    from advlab._utils import resolve_device
    from advlab.cli._common import runs_root
    from advlab.models import load_any_model

    if run is None and model_file is None:
        raise ValueError("what should be evaluated? Give a MODEL: a run directory (advlab "
                         "evaluate runs/x), a saved model, a TorchScript or .pt2 file, or a "
                         "factory file.py:Name with --weights; plus --dataset or --data for a "
                         "model advlab did not train")
    if run is not None and model_file is not None:
        raise ValueError("give the MODEL once: as the argument or as --model-file, not both")
    spec = str(run if run is not None else model_file)
    opts = model_options or ModelOptions()
    if Path(spec).is_dir() and not any(Path(spec).iterdir()) or (
            not Path(spec).exists() and ":" not in spec):
        raise FileNotFoundError(f"{spec} does not exist (or holds no model); train a model first "
                                f"(advlab train --out {spec}) or give another MODEL")
    model = load_any_model(spec, weights=opts.weights, model_args=opts.model_args, mean=opts.mean,
                           std=opts.std, imports=opts.imports, device=resolve_device(device))
    run_dir = _run_directory(Path(spec)) if Path(spec).exists() else None
    config = json.loads((run_dir / "config.json").read_text()) if run_dir and (run_dir / "config.json").exists() else {}
    if run_dir is None:
        run_dir = runs_root() / _model_name(spec, model)
    ctx = RunContext(model, run_dir.name, run_dir, "", None, config)
    _resolve_data(ctx, DataOptions(dataset, data, data_dir, image_size))
    return ctx


def _resolve_data(ctx: RunContext, opts: DataOptions) -> None:
    """Fill the context's dataset, options and split label from the options or the run."""
    config, metadata = ctx.config, getattr(ctx.model, "advlab_metadata", {}) or {}
    if opts.data is not None and opts.dataset is not None:
        raise ValueError("give --dataset NAME or --data PATH, not both")
    trained_on = config.get("dataset") or metadata.get("dataset")
    if opts.data is not None:
        ctx.dataset, ctx.data_options = "file", {"path": str(opts.data)}
        if opts.image_size is not None:
            ctx.data_options["image_size"] = opts.image_size
        recorded = config.get("dataset_options") or {}
        same = trained_on == "file" and Path(recorded.get("path", "")).resolve() == opts.data.resolve()
        ctx.data_options = {**recorded, **ctx.data_options} if same else ctx.data_options
    else:
        ctx.dataset = opts.dataset or trained_on or ""
        if ctx.dataset == trained_on:
            ctx.data_options = dict(config.get("dataset_options") or {})
    if not ctx.dataset:
        raise ValueError(f"{ctx.run_dir.name}: the model does not record its dataset; pass "
                         "--dataset NAME (advlab info lists them) or --data PATH")
    ctx.data_dir = str(opts.data_dir) if opts.data_dir else config.get("data_dir")
    _label_split(ctx, trained_on)


def _label_split(ctx: RunContext, trained_on: str | None) -> None:
    """``split_label`` "test" only for points the model was not trained or selected on."""
    from advlab.data import load_dataset

    info = load_dataset(ctx.dataset, "test", data_dir=ctx.data_dir, **ctx.data_options).info
    ctx.split_note = info.test_split
    if info.test_split.startswith("the whole file"):
        ctx.split_label, ctx.split_note = "points", "the whole file, not a held-out test split"
    elif info.test_split != "given" and trained_on is None:
        ctx.split_label = "points"
        ctx.split_note = (f"{info.test_split} -- but advlab did not train this model, so it "
                          "cannot tell whether these points were in its training data")


def test_points(ctx: RunContext, n: int | None, device: torch.device | None = None,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` points of a seeded shuffle of the test split, checked against the model."""
    from advlab.data import load_dataset
    from advlab.models.checks import check_model_data

    full = load_dataset(ctx.dataset, "test", data_dir=ctx.data_dir, **ctx.data_options)
    if n is not None and n > len(full):
        n = len(full)
    data = load_dataset(ctx.dataset, "test", data_dir=ctx.data_dir, n=n, seed=seed, **ctx.data_options)
    first = next(iter(ctx.model.parameters()), None)
    target = device or (first.device if first is not None else torch.device("cpu"))
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    check_model_data(ctx.model, data.x[:2].to(target, dtype), full.y,
                     what=f"{ctx.dataset} {ctx.data_options.get('path', '')}".strip())
    return data.x.to(target, dtype), data.y.to(target)
