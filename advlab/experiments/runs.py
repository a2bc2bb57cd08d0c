"""Training a model into a run directory, as ``advlab train`` does: the library function behind it.

:func:`train_run` builds the data splits and the model (fresh from the model registry, or the
model of another run to fine-tune), trains it with a registered defense through
:func:`advlab.training.fit`, validates adversarially each epoch when there is a defense (keeping
the most robust epoch, Goodfellow et al. 2015), measures the clean test accuracy, records the
run in the store next to the run directory and writes ``train_result.json``. The demo calls it;
:class:`TrainedRun` holds what the command prints.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._utils import json_safe

logger = logging.getLogger(__name__)

__all__ = ["TrainedRun", "clean_accuracy", "describe_run", "resume_arguments", "train_run"]

#: train_run arguments that a resumed run may change (they do not change what is computed).
RESUME_CHANGEABLE = frozenset({"device", "progress", "checkpoint_every", "patience", "data_dir",
                               "run_name", "store_path", "force"})
#: train_run arguments not stored with the run (where it is, how it was asked for).
_NOT_STORED = RESUME_CHANGEABLE | {"resume"}


@dataclass
class TrainedRun:
    """A finished training run: where it is, what :func:`advlab.training.fit` returned, the summary.

    ``summary`` is the content of ``train_result.json`` (``test_acc``, ``best_epoch``,
    ``epochs_done``, ``time_s``, ``val_acc``, ``adv_val_acc``, ``events``); ``None`` (and
    ``test_acc`` ``nan``) on the non-zero ranks of a torchrun launch, which write nothing.
    """

    run_dir: Path
    run_name: str
    store_path: Path
    result: Any  # advlab.training.FitResult
    test_acc: float
    summary: dict[str, Any] | None


def train_run(run_dir: str | Path, *, dataset: str = "fashion-mnist", model: str = "small_cnn",
              defense: str = "none", defense_params: dict[str, Any] | None = None,
              epochs: int = 2, lr: float = 1e-3, batch_size: int = 128, optimizer: str = "adam",
              schedule: str = "onecycle", weight_decay: float = 0.0, seed: int = 0,
              device: str = "auto", init: str | Path | None = None, val_fraction: float = 0.1,
              n_train: int | None = None, data_dir: str | Path | None = None,
              run_name: str | None = None, store_path: str | Path | None = None,
              resume: bool = False, checkpoint_every: int = 0, adv_val: bool | None = None,
              adv_val_eps: float | None = None, adv_val_n: int = 500, patience: int | None = None,
              progress: bool = True, dataset_options: dict[str, Any] | None = None,
              force: bool = False, model_options: dict[str, Any] | None = None,
              ema_decay: float | None = None,
              init_options: dict[str, Any] | None = None,
              select_within_se: float = 0.0) -> TrainedRun:
    """Train ``model`` (or fine-tune the model of the run ``init``) on ``dataset`` into ``run_dir``.

    Args:
        run_dir: the run directory.
        defense, defense_params: a registered training objective and its parameters
            (:func:`advlab.training.get_objective`; e.g. ``"fgsm-rs"``, ``{"eps": 0.1}``).
        epochs, lr, batch_size, optimizer, schedule, weight_decay: as
            :func:`advlab.training.fit` (Adam with the one-cycle schedule by default).
        seed: the model initialisation, the validation split, the data order and the attacks of
            the adversarial validation.
        init: fine-tune this model (its architecture; ``model`` is ignored): any MODEL form of
            :func:`advlab.models.load_any_model` -- a run directory, a saved model, a factory
            ``file.py:Name`` / ``package.module:Name``, a TorchScript file or a ``.pt2``
            archive. ``init_options`` are its keyword options there (``weights``,
            ``model_args``, ``mean``, ``std``, ``imports``). The run saves the model with its
            recipe (factory, program copy, normalisation), so ``load_model(run_dir)`` rebuilds it.
        n_train: train on a seeded random subset of this many samples.
        run_name, store_path: the run's name in the store (default: the directory's name) and the
            store (default: ``run_dir.parent / "advlab.db"``).
        resume, checkpoint_every: as :func:`advlab.training.fit`.
        dataset_options: options of the dataset (e.g. ``{"path": "mine.npz"}`` for ``"file"``);
            a file with a single set gets a seeded held-out test split that training never
            sees (recorded in the config as ``test_split``).
        force: replace a run already in ``run_dir`` (else it is refused, untouched).
        model_options: keyword options of the model builder (e.g. small_cnn's ``channels``
            and ``hidden``, for width studies).
        ema_decay: keep an exponential moving average of the weights as the run's model
            (:func:`advlab.training.fit`).
        adv_val: validate adversarially every epoch and keep the most robust epoch (Goodfellow et
            al. 2015); default: on when there is a defense. ``adv_val_eps`` (default: the
            defense's eps) and ``adv_val_n`` points; ``patience`` stops early.
        select_within_se: keep the latest epoch whose (adversarial) validation accuracy is
            within this many standard errors of the highest (0: the highest itself;
            :func:`advlab.training.fit`).

    Returns:
        the :class:`TrainedRun`.
    """
    arguments = {k: v for k, v in locals().items() if k not in _NOT_STORED and k != "run_dir"}
    if not select_within_se:  # stored only when set, so runs from before it still resume
        arguments.pop("select_within_se")
    from advlab.training.run_files import forget_run, guard_run_dir, run_lock

    run_dir = Path(run_dir)
    store_path = Path(store_path) if store_path is not None else run_dir.parent / "advlab.db"
    run_name = run_name or run_dir.name
    if os.environ.get("RANK", "0") != "0":
        return _train(run_dir, arguments, store_path, run_name, resume, device, checkpoint_every,
                      progress, patience, data_dir)
    created = not run_dir.exists()
    try:
        with run_lock(run_dir):
            guard_run_dir(run_dir, resume=resume, overwrite=force)
            if force:
                from advlab.store import Store

                with Store(store_path) as store:
                    forget_run(store, run_name)
            return _train(run_dir, arguments, store_path, run_name, resume, device,
                          checkpoint_every, progress, patience, data_dir)
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # refused before anything was written: leave no empty run behind
        raise


def _train(run_dir: Path, args: dict[str, Any], store_path: Path, run_name: str, resume: bool,
           device: str, checkpoint_every: int, progress: bool, patience: int | None,
           data_dir: str | Path | None) -> TrainedRun:
    """The body of :func:`train_run` (``args``: its stored arguments)."""
    from advlab.data import load_dataset
    from advlab.experiments.init_model import init_record
    from advlab.training import fit, get_objective

    dataset, options, seed, init = args["dataset"], dict(args["dataset_options"] or {}), args["seed"], args["init"]
    objective = get_objective(args["defense"], **(args["defense_params"] or {}))
    _log_defense(objective)
    train_data, val_data, net = _data_and_model(dataset, args["model"], seed, args["val_fraction"],
                                                init, n_train=args["n_train"], data_dir=data_dir,
                                                options=options,
                                                model_options=args["model_options"],
                                                init_options=args.get("init_options"))
    test_data = load_dataset(dataset, "test", data_dir=data_dir, **options)
    if test_data.info.test_split.startswith("the whole file"):
        raise ValueError(f"{dataset}: test_fraction=0 leaves no test split (the test points "
                         "would be the training points); keep a held-out split")
    if test_data.info.test_split != "given":
        logger.info("test split: %s", test_data.info.test_split)
    validation = _adversarial_validation(objective, val_data, args["adv_val_n"], seed,
                                         enabled=args["adv_val"], eps=args["adv_val_eps"])
    config = {"dataset": train_data.info.name,
              "model": _architecture(net) if init is not None else args["model"],
              "defense": objective.name, "val_fraction": args["val_fraction"],
              "n_train": args["n_train"], "data_dir": str(data_dir) if data_dir else None,
              "dataset_options": options, "test_split": test_data.info.test_split,
              **({"model_options": dict(args["model_options"])} if args["model_options"] else {}),
              "adv_val": validation[1] if validation else None,
              "train_args": json_safe(args),
              **({"init": init_record(init, net)} if init is not None else {})}
    started = time.perf_counter()
    result = fit(net, train_data, val_data=val_data, objective=objective, epochs=args["epochs"],
                 batch_size=args["batch_size"], lr=args["lr"], optimizer=args["optimizer"],
                 weight_decay=args["weight_decay"], schedule=args["schedule"], seed=seed,
                 device=device, run_dir=run_dir, checkpoint_every=checkpoint_every, resume=resume,
                 config=config, progress=progress, store=store_path, run_name=run_name,
                 epoch_end=validation[0] if validation else None,
                 select_metric="adv_val_acc" if validation else "val_acc",
                 early_stopping_patience=patience, overwrite=True,
                 ema_decay=args["ema_decay"], select_within_se=args.get("select_within_se", 0.0))
    if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than 0 writes nothing
        return TrainedRun(run_dir, run_name, store_path, result, float("nan"), None)
    elapsed = time.perf_counter() - started
    test_acc = clean_accuracy(result.model, test_data, device)
    summary = _record(store_path, run_name, run_dir, result, test_acc, elapsed,
                      test_data.info.test_split, len(test_data))
    return TrainedRun(run_dir, run_name, store_path, result, test_acc, summary)


def describe_run(run: TrainedRun) -> list[str]:
    """The lines ``advlab train`` prints about a finished run (none on the non-zero ranks)."""
    if run.summary is None:
        return []
    result = run.result
    lines = [f"run        {run.run_dir}  (store {run.store_path}, name {run.run_name!r})"]
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    if best is not None:
        extra = f", adv_val_acc {best['adv_val_acc']:.4f}" if "adv_val_acc" in best else ""
        lines.append(f"best epoch {result.best_epoch}: val_acc "
                     f"{best.get('val_acc', float('nan')):.4f}{extra}")
        from advlab.training.selection import decline_after_kept

        metric = "adv_val_acc" if "adv_val_acc" in best else "val_acc"
        decline = decline_after_kept(result.history, metric, result.best_epoch)
        if decline is not None:
            lines.append(f"warning    {decline}")
    lines += [f"event      epoch {event['epoch']}: {event['event']} ({event['detail']}); "
              f"{event['action']}" for event in result.events]
    split = run.summary.get("test_split", "given")
    n_test = run.summary.get("n_test")
    if split != "given":
        lines.append(f"test split {split}")
    lines.append(f"test acc   {run.test_acc:.4f}  (n={n_test}, {len(result.history)} epochs, "
                 f"{run.summary['time_s']:.1f} s)")
    return lines


def _log_defense(objective: Any) -> None:
    """Log every setting of the defense, defaults included (nothing is used silently)."""
    settings = getattr(objective.function, "settings", None)
    if objective.name != "none" and isinstance(settings, dict):
        given = set(objective.params)
        shown = ", ".join(f"{k}={v!r}" + ("" if k in given else " (default)")
                          for k, v in settings.items())
        logger.info("defense %s: %s", objective.name, shown)


def resume_arguments(run_dir: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """The :func:`train_run` arguments of the run in ``run_dir`` (its ``config.json``), with the
    ``given`` ones checked: a given argument must agree with the stored one unless it is in
    :data:`RESUME_CHANGEABLE`; otherwise ValueError naming every difference."""
    config, path = _stored_config(Path(run_dir))
    stored = config.get("train_args")
    if not isinstance(stored, dict):  # a run of advlab 0.1: its arguments from its config
        from advlab.experiments.legacy_runs import LEGACY_OPTIONS, legacy_arguments

        stored, missing = legacy_arguments(config)
        missing = [key for key in missing if key not in given]
        if missing:
            raise ValueError(f"--resume: {path} (advlab {config.get('advlab_version', '0.1')}) "
                             "does not record " + ", ".join(missing) + "; give "
                             + " ".join(LEGACY_OPTIONS[key] for key in missing)
                             + " as the run was started with")
        stored = {**json_safe({k: v for k, v in given.items() if k not in stored}), **stored}
        logger.info("resuming a run of advlab %s with the arguments its config records",
                    config.get("advlab_version", "0.1"))
    differences = [f"{key}: the run has {stored[key]!r}, given {value!r}"
                   for key, value in json_safe(given).items()
                   if key in stored and key not in RESUME_CHANGEABLE and stored[key] != value]
    if differences:
        raise ValueError(f"--resume {run_dir}: the given arguments differ from the run's -- "
                         + "; ".join(differences) + ". Drop them (the run's own are used), or "
                         "train a new run into another --out")
    return {**stored, **{k: v for k, v in given.items() if k in RESUME_CHANGEABLE}}


def _stored_config(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """The run's config: ``config.json``, else the one inside ``checkpoint.pt``."""
    import json

    from advlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

    path = run_dir / "config.json"
    if path.exists():
        try:
            config = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"--resume: {path} is not JSON ({err}); restore it, or delete it "
                             "to resume from the config inside checkpoint.pt") from None
        if isinstance(config, dict):
            return config, path
    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.exists():
        raise FileNotFoundError(f"--resume: {run_dir} holds no run to resume (no config.json); "
                                "start it without --resume")
    config = load_checkpoint(checkpoint).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"--resume: {checkpoint} records no config; start the run over")
    return config, checkpoint


def _data_and_model(dataset: str, model: str, seed: int, val_fraction: float,
                    init: str | Path | None, *, n_train: int | None = None,
                    data_dir: str | Path | None = None,
                    options: dict[str, Any] | None = None,
                    model_options: dict[str, Any] | None = None,
                    init_options: dict[str, Any] | None = None) -> tuple[Any, Any, nn.Module]:
    """The train / validation splits and the model: fresh (initialised from ``seed``) or ``init``'s."""
    from advlab.data import load_dataset
    from advlab.models import create_model

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    options = {**(options or {}), "seed": seed, "val_fraction": val_fraction, "data_dir": data_dir}
    train_data = load_dataset(dataset, "train", n=n_train, **options)
    val_data = load_dataset(dataset, "val", **options) if val_fraction > 0 else None
    info = train_data.info
    if init is None:
        net = create_model(model, info.num_classes, info.input_shape, normalize=(info.mean, info.std),
                           seed=seed, **(model_options or {}))
        return train_data, val_data, net
    from advlab.experiments.init_model import init_model

    net = init_model(init, init_options).train()
    if not hasattr(net, "advlab_spec"):  # the user's code, a program, a wrapper: one forward
        from advlab.models.checks import check_model_data

        check_model_data(net, train_data.x[:2], train_data.y, what=info.name)
        return train_data, val_data, net
    spec = getattr(net, "advlab_spec", {})
    shape, classes = tuple(spec.get("input_shape", ())), spec.get("num_classes")
    if shape != tuple(info.input_shape) or classes != info.num_classes:
        raise ValueError(f"init {init}: its model takes {shape} inputs and {classes} classes, but "
                         f"{info.name} has {tuple(info.input_shape)} and {info.num_classes}")
    return train_data, val_data, net


def _architecture(net: nn.Module) -> str:
    """The architecture's name: the registry name, or the factory's."""
    spec = getattr(net, "advlab_spec", None) or getattr(net, "advlab_factory", None) or {}
    return str(spec.get("name", type(net).__name__))


def _adversarial_validation(objective: Any, val_data: Any, n: int, seed: int, *,
                            enabled: bool | None = None,
                            eps: float | None = None) -> tuple[Any, dict[str, Any]] | None:
    """The adversarial-validation hook (APGD-CE at the defense's eps) and its config entry, or
    None when off (by default: on exactly when there is a defense)."""
    from advlab.threat import ThreatModel
    from advlab.training import adversarial_validation

    settings = getattr(objective.function, "settings", None) or {}
    if not (objective.name != "none" if enabled is None else enabled):
        return None
    if val_data is None:
        raise ValueError("adversarial validation needs a validation split: use val_fraction > 0 "
                         "(--val-fraction) or turn it off (--no-adv-val)")
    eps = eps if eps is not None else settings.get("eps")
    if eps is None:
        raise ValueError(f"the defense {objective.name!r} has no eps to validate at: give "
                         "--adv-val-eps (adv_val_eps=) or turn it off (--no-adv-val, "
                         "adv_val=False)")
    threat = ThreatModel(settings.get("norm", "linf"), float(eps))
    hook = adversarial_validation(val_data, threat, n=n, seed=seed)
    return hook, {"norm": threat.norm, "eps": threat.eps, "n": n, "preset": "fast"}


def clean_accuracy(model: nn.Module, data: Any, device: str = "auto") -> float:
    """Clean accuracy of ``model`` on a Dataset (``.loader(batch_size)``), batched on ``device``."""
    from advlab._utils import resolve_device

    target = resolve_device(device)
    model = model.to(target).eval()
    correct = 0
    with torch.no_grad():
        for x, y in data.loader(batch_size=1024):
            correct += int((model(x.to(target)).argmax(dim=1).cpu() == y).sum())
    return correct / len(data)


def _record(store_path: Path, run_name: str, run_dir: Path, result: Any, test_acc: float,
            elapsed: float, test_split: str = "given", n_test: int | None = None) -> dict[str, Any]:
    """Store the test accuracy with the run and write ``train_result.json``; the summary."""
    from advlab._utils import atomic_write_json
    from advlab.store import Store

    last = result.history[-1] if result.history else {}
    best = result.history[result.best_epoch - 1] if result.best_epoch else last
    summary = {"test_acc": test_acc, "best_epoch": result.best_epoch,
               "epochs_done": len(result.history), "time_s": elapsed,
               "val_acc": best.get("val_acc"), "adv_val_acc": best.get("adv_val_acc"),
               "events": result.events, "test_split": test_split, "n_test": n_test}
    with Store(store_path) as store:
        run = store.get_run(run_name)
        metadata = {**(run["metadata"] if run else {}), **summary}
        store.add_run(run_name, run_dir.resolve(), result.config, metadata)
        store.add_evaluation(run_name, "clean-accuracy", {"split": "test", "test_split": test_split,
                                                          "n": n_test}, {"accuracy": test_acc})
    atomic_write_json(run_dir / "train_result.json", {**summary, "run_name": run_name,
                                                      "store": str(store_path)})
    return summary
