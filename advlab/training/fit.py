"""``fit``: train a classifier with any objective, with checkpoints, resume and torchrun/DDP.

Randomness. The caller initialises the model. Everything random inside ``fit`` is a function of
``seed``: the data order (see :mod:`advlab.training.data`) and the torch RNG used by dropout,
random starts of inner attacks and the like, which runs in a forked RNG scope
(``torch.random.fork_rng``) seeded from ``seed`` and the rank. The caller's global RNG state is
the same after ``fit`` as before, and the RNG states are saved in every checkpoint, so a resumed
run repeats the uninterrupted one exactly.

Batch size. ``batch_size`` is the *global* batch: with ``W`` processes each takes
``batch_size // W`` samples per step, and the ranks' batches together are the batches a single
process would see (DDP averages the gradients, so the update is the same up to float rounding
when ``W`` divides the batch size and the model has no batch statistics).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._checks import check_choice, check_int
from advlab.store import Store
from advlab.training.checkpoint import normalise_config
from advlab.training.data import BatchSource, as_training_data, steps_per_epoch
from advlab.training.distributed import (
    DistContext,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from advlab.training.ema import ModelEMA, check_ema_decay
from advlab.training.loop import EpochEnd, LoopSettings, Trainer
from advlab.training.objectives import (
    Objective,
    ObjectiveContext,
    describe_objective,
    get_objective,
    objective_hook,
    unwrap_model,
    watches_collapse,
)
from advlab.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_scheduler,
)
from advlab.training.rollback import RollbackOnCollapse
from advlab.training.run_files import RunRecorder, guard_run_dir, run_lock

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``model`` is the trained model (unwrapped, eval mode) holding the *best* weights by
    ``select_metric`` (those of ``run_dir/model.safetensors``), or the last ones when no epoch
    record has that metric; ``history`` has one record per epoch; ``best_epoch`` is 1-based;
    ``events`` lists what happened besides epochs (catastrophic overfitting and its rollback).
    """

    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int | None
    run_dir: Path | None
    config: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


def fit(model: nn.Module, train_data: Any, *, val_data: Any = None,
        objective: Objective | str | None = None, epochs: int = 10, batch_size: int = 128,
        lr: float = 1e-3, optimizer: str = "adam", momentum: float = 0.9,
        weight_decay: float = 0.0, schedule: str = "onecycle", seed: int = 0,
        device: str | torch.device = "auto", run_dir: str | Path | None = None,
        checkpoint_every: int = 0, resume: bool = False, config: dict[str, Any] | None = None,
        progress: bool = True, store: Store | str | Path | None = None,
        run_name: str | None = None, epoch_end: EpochEnd | None = None,
        select_metric: str = "val_acc", early_stopping_patience: int | None = None,
        select_within_se: float = 0.0, num_workers: int = 0, init: str | Path | None = None,
        ema_decay: float | None = None, overwrite: bool = False) -> FitResult:
    """Train ``model`` on ``train_data`` by minimising ``objective`` (default cross-entropy).

    Args:
        train_data, val_data: a map-style Dataset returning ``(x, y)`` (e.g. ``advlab.data``'s)
            or an ``(x, y)`` tuple of tensors, x ``(N, C, H, W)`` in [0, 1], y ``(N,)``.
        objective: ``objective(model, x, y) -> loss | (loss, logits)``, or a registered name
            (:func:`get_objective`); ``None`` is plain cross-entropy.
        epochs, batch_size (global), lr, optimizer ("adam" | "sgd"), momentum, weight_decay,
            schedule ("onecycle" | "cosine" | "constant", stepped per optimiser step).
        seed: data order and the RNG of dropout etc. (see the module docstring).
        device: "auto" | "cpu" | "cuda" | ...; under torchrun each rank uses ``cuda:LOCAL_RANK``.
        run_dir: where config.json, history.json, checkpoint.pt, model/last.safetensors go.
        checkpoint_every: also checkpoint every this many optimiser steps (0: per epoch only).
        resume: continue the run in ``run_dir`` from its checkpoint (mid-epoch too); a checkpoint
            with a different config is refused (:data:`~advlab.training.checkpoint.RESUME_IGNORED_KEYS`).
        config: extra entries for the run config (dataset, model name, ...); fit's own settings
            take precedence over keys of the same name.
        progress: a tqdm bar per epoch; epoch summaries are logged either way.
        store, run_name: register the run and log each epoch in a :class:`~advlab.store.Store`
            (or the store at that path); the name defaults to ``run_dir``'s name.
        epoch_end: ``epoch_end(model, epoch) -> dict`` after each epoch (model unwrapped, eval
            mode, 1-based epoch; called on every rank, rank 0's metrics are kept).
        select_metric: the epoch-record metric (higher is better) choosing the best epoch.
        early_stopping_patience: stop after this many epochs without a newly selected epoch.
        select_within_se: 0 keeps the epoch of highest ``select_metric``; ``k > 0`` keeps the
            *latest* epoch whose metric is within ``k`` standard errors of the highest (the
            records' ``<metric>_se``: ``val_acc_se``, ``adv_val_acc_se``), so that validation
            noise does not pick an epoch before the learning-rate annealing.
        num_workers: DataLoader workers for datasets that are not in-memory tensors.
        init: fine-tune: start from the weights of this run directory (``model.safetensors``,
            its best epoch; the architectures must match); recorded in the config as ``init``.
        ema_decay: keep an exponential moving average of the weights with this decay per step
            (e.g. 0.999, with warm-up; :class:`~advlab.training.ema.ModelEMA`) and make it the
            run's model: validated, saved and returned instead of the raw weights.
        overwrite: replace a run already in ``run_dir`` (finished or interrupted); without it
            (and without ``resume``) such a directory is refused and left untouched. While fit
            runs, ``run_dir/.advlab.lock`` keeps a second process from writing the same run.

    Data: tensors (or numpy arrays) ``(x, y)``, an advlab Dataset, any map-style Dataset
    returning ``(x, y)`` (``TensorDataset`` too) or a ``DataLoader`` (its dataset is used, in
    fit's own seeded order). Inputs follow the model's dtype (a float64 model gets float64
    batches) and labels of any integer dtype become int64, once, at the entry.

    Returns:
        :class:`FitResult`. Under torchrun every rank returns it; only rank 0 writes files.
    """
    settings = _settings(epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule,
                         seed, device, checkpoint_every, progress, select_metric,
                         early_stopping_patience, num_workers, select_within_se)
    if isinstance(objective, str):
        objective = get_objective(objective)
    objective = objective if objective is not None else get_objective("none")
    run_path = Path(run_dir) if run_dir is not None else None
    if resume and run_path is None:
        raise ValueError("resume=True needs run_dir= (the directory of the run to continue)")
    extra = dict(config or {})
    if ema_decay is not None:
        extra["ema"] = {"decay": check_ema_decay(ema_decay), "warmup": True}
    if init is not None:
        extra["init"] = load_init(model, init)
    train_data, val_data = as_training_data(train_data), as_training_data(val_data)
    context, resolved = setup_distributed(device)
    lock = run_lock(run_path) if run_path is not None and context.is_main else nullcontext()
    try:
        with lock, _forked_rng(resolved, seed, context.rank):
            if run_path is not None and context.is_main:
                guard_run_dir(run_path, resume=resume, overwrite=overwrite)
            return _fit(model, train_data, val_data, objective, settings, extra, resolved,
                        context, run_path, resume, store, run_name, epoch_end, ema_decay)
    finally:
        teardown_distributed(context)


def _settings(epochs: int, batch_size: int, lr: float, optimizer: str, momentum: float,
              weight_decay: float, schedule: str, seed: int, device: Any, checkpoint_every: int,
              progress: bool, select_metric: str, patience: int | None,
              num_workers: int, select_within_se: float = 0.0) -> dict[str, Any]:
    """Check fit's arguments; return them as the run-config entries."""
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                             ("checkpoint_every", checkpoint_every, 0), ("seed", seed, 0),
                             ("num_workers", num_workers, 0)):
        check_int(name, value, minimum=low)
    if patience is not None:
        check_int("early_stopping_patience", patience)
    if not lr > 0 or weight_decay < 0 or momentum < 0:
        raise ValueError(f"need lr > 0, weight_decay >= 0 and momentum >= 0; got lr={lr}, "
                         f"weight_decay={weight_decay}, momentum={momentum}")
    if not (isinstance(select_within_se, int | float) and not isinstance(select_within_se, bool)
            and math.isfinite(select_within_se) and select_within_se >= 0):
        raise ValueError(f"select_within_se must be a number >= 0 (standard errors; 0 keeps the "
                         f"epoch of highest {select_metric}), got {select_within_se!r}")
    # only a non-zero tolerance enters the config, so runs from before it still resume
    tolerance = {"select_within_se": float(select_within_se)} if select_within_se else {}
    return {
        **tolerance,
        "epochs": epochs, "batch_size": batch_size, "lr": float(lr),
        "optimizer": check_choice("optimizer", optimizer, OPTIMIZERS, fold=True),
        "momentum": float(momentum), "weight_decay": float(weight_decay),
        "schedule": check_choice("schedule", schedule, SCHEDULES, fold=True), "seed": seed,
        "device": str(device), "checkpoint_every": checkpoint_every, "progress": progress,
        "select_metric": select_metric, "early_stopping_patience": patience,
        "num_workers": num_workers,
    }


def load_init(model: nn.Module, run: str | Path) -> dict[str, Any]:
    """Load the best weights of the run directory ``run`` into ``model`` (fine-tuning); return
    ``{"run", "epoch"}`` for the config. Raises a ValueError when the architectures differ."""
    from advlab.models import load_model

    source = load_model(run)
    try:
        unwrap_model(model).load_state_dict(source.state_dict())
    except RuntimeError as error:
        spec = getattr(source, "advlab_spec", None)
        raise ValueError(f"cannot fine-tune from {str(run)!r}: its model ({spec}) does not match "
                         f"the model given to fit; build it with advlab.load_model({str(run)!r})"
                         f" -- {str(error).splitlines()[0]}") from None
    metadata = getattr(source, "advlab_metadata", {}) or {}
    logger.info("fine-tuning from %s (epoch %s)", run, metadata.get("epoch"))
    return {"run": str(Path(run).resolve()), "epoch": metadata.get("epoch")}


@contextmanager
def _forked_rng(device: torch.device, seed: int, rank: int) -> Iterator[None]:
    """Run with torch's global RNG forked and seeded from ``(seed, rank)``; restored after."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        process_seed = seed + 0x5EED * (rank + 1)
        torch.default_generator.manual_seed(process_seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(process_seed)
        yield


def _run_config(settings: dict[str, Any], extra: dict[str, Any], model: nn.Module,
                objective: Objective, train: BatchSource, val: BatchSource | None,
                context: DistContext) -> dict[str, Any]:
    """The full run config written to config.json and compared on resume."""
    from advlab import __version__

    return normalise_config({
        **extra, **settings,
        "model_spec": getattr(model, "advlab_spec", None),
        "objective": describe_objective(objective),
        "train_data": train.describe(),
        "val_data": val.describe() if val is not None else None,
        "world_size": context.world_size,
        "advlab_version": __version__, "torch_version": torch.__version__,
    })


def _fit(model: nn.Module, train_data: Any, val_data: Any, objective: Objective,
         settings: dict[str, Any], extra: dict[str, Any], device: torch.device,
         context: DistContext, run_dir: Path | None, resume: bool,
         store: Store | str | Path | None, run_name: str | None,
         epoch_end: EpochEnd | None, ema_decay: float | None = None) -> FitResult:
    per_rank = settings["batch_size"] // context.world_size
    if per_rank < 1:
        raise ValueError(f"batch_size {settings['batch_size']} is smaller than the number of "
                         f"processes ({context.world_size}); batch_size is the global batch")
    if settings["batch_size"] % context.world_size:
        logger.warning("batch_size %d is not a multiple of %d processes: each takes %d",
                       settings["batch_size"], context.world_size, per_rank)
    model = unwrap_model(model).to(device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    train = BatchSource(train_data, device, settings["num_workers"], dtype)
    val = BatchSource(val_data, device, settings["num_workers"], dtype) if val_data is not None else None
    config = _run_config(settings, extra, model, objective, train, val, context)
    recorder = RunRecorder(run_dir, store, run_name, config, context.is_main)
    checkpoint = recorder.load_resume_checkpoint() if resume else None
    wrapped = wrap_model(model, context, device)
    optimizer = build_optimizer(wrapped.parameters(), settings["optimizer"], settings["lr"],
                                settings["momentum"], settings["weight_decay"])
    epoch_steps = steps_per_epoch(len(train), per_rank, context)
    scheduler = build_scheduler(optimizer, settings["schedule"], settings["lr"],
                                settings["epochs"] * epoch_steps)
    bind = objective_hook(objective, "bind")
    if bind is not None:  # seeds the objective's generator, resets its state
        bind(ObjectiveContext(seed=settings["seed"], rank=context.rank,
                              world_size=context.world_size, device=device,
                              steps_per_epoch=epoch_steps, epochs=settings["epochs"]))
    loop_settings = LoopSettings(
        epochs=settings["epochs"], batch_size=per_rank, seed=settings["seed"],
        checkpoint_every=settings["checkpoint_every"], select_metric=settings["select_metric"],
        early_stopping_patience=settings["early_stopping_patience"],
        progress=settings["progress"], epoch_end=epoch_end,
        select_within_se=settings.get("select_within_se", 0.0))

    def on_epoch(trainer: Trainer, record: dict[str, Any], improved: bool) -> None:
        select = trainer.state.best_epoch is not None
        recorder.epoch(trainer.evaluation_model, record, improved, select, trainer.state.history)

    callbacks: tuple[Any, ...] = (RollbackOnCollapse(objective),) if watches_collapse(objective) else ()
    if ema_decay is not None:
        callbacks += (ModelEMA(model, decay=ema_decay),)
    trainer = Trainer(model, wrapped, objective, optimizer, scheduler, train, val, device,
                      context, loop_settings, on_epoch, recorder.checkpoint, callbacks)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    recorder.start(model, checkpoint["epoch"] if checkpoint is not None else None)
    started = time.perf_counter()
    trainer.run()
    return _finish(model, trainer, recorder, run_dir, config, time.perf_counter() - started)


def _finish(model: nn.Module, trainer: Trainer, recorder: RunRecorder, run_dir: Path | None,
            config: dict[str, Any], elapsed: float) -> FitResult:
    """Load the best weights, record the outcome, build the result."""
    state = trainer.state
    best = recorder.best_weights(unwrap_model(model)) if state.best_epoch is not None else None
    if best is not None:
        model.load_state_dict(best)
    elif state.best_epoch is not None:
        logger.warning("the best weights (epoch %d) are not available; returning the last ones",
                       state.best_epoch)
    if best is None and trainer.evaluation_model is not model:  # the last weight average
        model.load_state_dict(trainer.evaluation_model.state_dict())
    history = [dict(record) for record in state.history]
    summary = {"epochs_done": state.epoch, "best_epoch": state.best_epoch,
               "best_metric": state.best_value, "stopped_early": state.stopped,
               "time_s": elapsed, "last": history[-1] if history else None,
               "events": list(state.events)}
    recorder.finish(summary)
    return FitResult(model=model.eval(), history=history, best_epoch=state.best_epoch,
                     run_dir=run_dir, config=config, events=list(state.events))
