"""``advlab train``: train a model on a dataset with a defense, into a run directory.

    advlab train --dataset fashion-mnist --model small_cnn --epochs 2 --out runs/x
    advlab train --defense pgd-at --eps 0.1 --steps 7 --param eps_ramp=0.3 --out runs/pgd
    advlab train --defense fgsm-mix --init runs/x --epochs 2 --out runs/x-ft   (fine-tuning)
    advlab train --init net.py:Net --weights net.safetensors --dataset digits --out runs/net-ft
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

from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import (
    DataOption,
    ImageSizeOption,
    ImportOption,
    MeanOption,
    ModelArgsOption,
    StdOption,
    WeightsOption,
    echo,
    is_rank_zero,
    parse_key_values,
    runs_root,
    seed_everything,
    setup_logging,
)


def _defense_help() -> str:
    """Every defense with every default, from the objectives registry (shown in --help)."""
    import inspect

    from advlab.training import OBJECTIVES

    parts = []
    for name in OBJECTIVES.names():
        defaults = {p.name: p.default for p in inspect.signature(OBJECTIVES.get(name)).parameters.values()
                    if p.default is not inspect.Parameter.empty}
        shown = ", ".join(f"{k}={v}" for k, v in defaults.items())
        parts.append(f"{name} ({shown})" if shown else name)
    return ("Training objective. Defaults (override with the options below or --param "
            "KEY=VALUE; the settings used are printed): " + "; ".join(parts) + ".")


def _slug(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def train(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset name (advlab info lists them).")] = "fashion-mnist",
    data: DataOption = None,
    image_size: ImageSizeOption = None,
    test_fraction: Annotated[float, typer.Option(help="With --data holding only x, y: share held out as the test split (never trained on).")] = 0.2,
    recipe: Annotated[str | None, typer.Option(help="A named, documented recipe (model, defense, schedule, budget; advlab info lists them); the options given explicitly override it.")] = None,
    model: Annotated[str, typer.Option(help="Model name: mlp, small_cnn, lenet, preact_resnet18, ...")] = "small_cnn",
    epochs: Annotated[int, typer.Option(help="Number of epochs.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Global batch size (split over torchrun processes).")] = 128,
    lr: Annotated[float, typer.Option(help="Learning rate (the peak for onecycle).")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or sgd (momentum 0.9).")] = "adam",
    schedule: Annotated[str, typer.Option(help="onecycle, cosine, cyclic (Wong et al.), multistep (Madry / Rice et al.) or constant (stepped per batch).")] = "onecycle",
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seeds the model init, the validation split and the data order.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of the training set held out for validation (0: none).")] = 0.1,
    n_train: Annotated[int | None, typer.Option(help="Train on a seeded random subset of this many samples.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset files are.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default <runs root>/<dataset>-<model>-<defense>).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name in the store (default: the run directory's name).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its checkpoint, with the arguments stored in its config.json (any given again must agree).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a run already in --out (its files and store records). Without it such a run is refused and left untouched.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Also checkpoint every N optimiser steps (0: per epoch).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    defense: Annotated[str, typer.Option(help=_defense_help())] = "none",
    eps: Annotated[float | None, typer.Option(help="Defense: training radius (inputs in [0, 1]).")] = None,
    norm: Annotated[str | None, typer.Option(help="Defense: threat norm, linf or l2.")] = None,
    clean_weight: Annotated[float | None, typer.Option(help="fgsm-mix / noise: weight of the clean loss (Goodfellow et al.'s alpha; fgsm-mix 0.5, noise 0).")] = None,
    steps: Annotated[int | None, typer.Option(help="pgd-at / trades / clip: inner steps.")] = None,
    step_size: Annotated[float | None, typer.Option(help="Defense: inner step size.")] = None,
    beta: Annotated[float | None, typer.Option(help="trades: weight of the KL term (6).")] = None,
    lam: Annotated[float | None, typer.Option(help="cure / clip: weight of the penalty.")] = None,
    h: Annotated[float | None, typer.Option(help="cure: finite-difference length.")] = None,
    sigma: Annotated[float | None, typer.Option(help="noise: noise scale.")] = None,
    eps_ramp: Annotated[float | None, typer.Option(help="Defense: fraction of training over which eps grows from 0.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Any other defense parameter, KEY=VALUE (repeatable).")] = None,
    init: Annotated[str | None, typer.Option(help="Fine-tune: start from this MODEL, in any form evaluate takes: a run directory, a saved advlab model, a factory path/to/file.py:Name or package.module:Name (with --weights, --model-args; a .py factory RUNS that file's code), a TorchScript file or a torch.export .pt2 archive (recognised by content); --mean/--std wrap it in Normalize. --model is ignored. The run keeps what rebuilds it (factory reference, a copy of the program, the normalisation), so every command loads the run as is.")] = None,
    weights: WeightsOption = None,
    model_args: ModelArgsOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    imports: ImportOption = None,
    adv_val: Annotated[bool | None, typer.Option("--adv-val/--no-adv-val", help="Validate adversarially each epoch and keep the most robust epoch (default: on with a defense).")] = None,
    adv_val_eps: Annotated[float | None, typer.Option(help="Radius of the adversarial validation (default: the defense's eps).")] = None,
    adv_val_n: Annotated[int, typer.Option(help="Validation points attacked per epoch.")] = 500,
    patience: Annotated[int | None, typer.Option(help="Stop after this many epochs without a better (adversarial) validation accuracy.")] = None,
    ema_decay: Annotated[float | None, typer.Option(help="Keep an exponential moving average of the weights with this decay per step (e.g. 0.999) as the run's model.")] = None,
    select_within_se: Annotated[float, typer.Option(help="Keep the latest epoch whose (adversarial) validation accuracy is within this many standard errors of the highest (0: the highest itself; 1 guards against picking a noisy early epoch).")] = 0.0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train a classifier (optionally with a robust-training defense) with checkpoints and resume.

    A run directory that already holds a run is never overwritten without --force; --resume
    --out DIR continues one with its stored arguments; Ctrl-C says how to resume.
    """
    setup_logging()
    from advlab.experiments.runs import describe_run, resume_arguments, train_run

    params = defense_params(param, eps=eps, norm=norm, clean_weight=clean_weight, steps=steps,
                            step_size=step_size, beta=beta, lam=lam, h=h, sigma=sigma,
                            eps_ramp=eps_ramp)
    init_options = _init_options(init, weights, model_args, mean, std, imports, resume=resume)
    options: dict[str, Any] | None = None
    if data is not None:
        dataset, options = "file", {"path": str(Path(data).resolve()), "test_fraction": test_fraction}
        if image_size is not None:
            options["image_size"] = image_size
    if out is not None:
        run_dir, store_path = Path(out), Path(out).parent / "advlab.db"
    else:
        run_dir = runs_root() / "-".join(_slug(part) for part in (dataset, _model_name(model, init), defense))
        store_path = runs_root() / "advlab.db"
    arguments: dict[str, Any] = dict(dataset=dataset, model=model, defense=defense, defense_params=params,
                     epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                     schedule=schedule, weight_decay=weight_decay, seed=seed, device=device,
                     init=str(init) if init is not None else None, val_fraction=val_fraction,
                     n_train=n_train, data_dir=str(data_dir) if data_dir else None,
                     checkpoint_every=checkpoint_every, adv_val=adv_val,
                     adv_val_eps=adv_val_eps, adv_val_n=adv_val_n, patience=patience,
                     progress=progress, dataset_options=options, ema_decay=ema_decay,
                     select_within_se=select_within_se)
    if init_options is not None:
        arguments["init_options"] = init_options
    if recipe is not None and not resume:
        arguments.update(_with_recipe(recipe, arguments, _given(ctx)))
        if out is None:
            run_dir = runs_root() / _slug(recipe)
    if resume:
        arguments = resume_arguments(run_dir, {k: arguments[k] for k in _given(ctx)})
    seed_everything(arguments["seed"])  # the command seeds once; the library uses generators
    try:
        run = train_run(run_dir, **arguments, run_name=name, store_path=store_path,
                        resume=resume, force=force)
    except KeyboardInterrupt:
        typer.secho(f"\ninterrupted: {run_dir} keeps its last checkpoint; continue with\n"
                    f"  advlab train --resume --out {run_dir}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    for k, line in enumerate(describe_run(run) if is_rank_zero() else []):
        echo(line, bold=k == 0)


#: command-line options -> the train_run argument they set
_DEFENSE_OPTIONS = {"eps", "norm", "clean_weight", "steps", "step_size", "beta", "lam", "h", "sigma",
                    "eps_ramp", "param"}
_DATA_OPTIONS = {"data", "image_size", "test_fraction"}
_INIT_OPTIONS = {"weights", "model_args", "mean", "std", "imports"}


def _init_options(init: str | None, weights: Path | None, model_args: str | None,
                  mean: list[float] | None, std: list[float] | None,
                  imports: list[str] | None, *, resume: bool = False) -> dict[str, Any] | None:
    """The options of the ``--init`` MODEL (None when none is given), paths made absolute."""
    from advlab.cli._common import parse_json_object

    given = {"weights": str(Path(weights).resolve()) if weights is not None else None,
             "model_args": parse_json_object(model_args), "mean": list(mean) if mean else None,
             "std": list(std) if std else None, "imports": list(imports) if imports else None}
    given = {key: value for key, value in given.items() if value is not None}
    if given and init is None and not resume:
        names = ", ".join("--" + key.replace("_", "-").replace("imports", "import") for key in given)
        raise ValueError(f"{names}: these describe the --init MODEL; give --init MODEL too (to "
                         "train a fresh model, drop them)")
    return given or None


def _with_recipe(recipe: str, arguments: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The recipe's train_run options, overridden by the options given on the command line."""
    from advlab.training.recipes import expand_recipe

    explicit = {key: arguments[key] for key in given if key in arguments}
    return expand_recipe(recipe, **explicit)


def _given(ctx: typer.Context) -> set[str]:
    """The train_run arguments set on the command line (not left at their defaults)."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is None or source.name == "DEFAULT":
            continue
        if name in _DEFENSE_OPTIONS:
            given.add("defense_params")
        elif name in _DATA_OPTIONS:
            given |= {"dataset", "dataset_options"}
        elif name in _INIT_OPTIONS:
            given.add("init_options")
        elif name not in ("out", "name", "resume", "force", "recipe"):
            given.add(name)
    return given


def _model_name(model: str, init: str | None) -> str:
    """The architecture's name: ``model``, or that of the MODEL ``init`` fine-tunes (read
    without loading it: a factory's name, a saved model's spec name, else the file's stem)."""
    import json

    from advlab.models.user import _split_factory

    if init is None:
        return model
    path = Path(init)
    if not path.exists() and _split_factory(init) is not None:
        return _split_factory(init)[1]  # type: ignore[index]
    document = path / "model.json" if path.is_dir() else path.with_suffix(".json")
    try:
        return str(json.loads(document.read_text())["spec"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return path.stem or "model"


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
