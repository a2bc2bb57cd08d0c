"""The one training loop behind :func:`advlab.training.fit` (epochs, steps, metrics, resume).

:class:`Trainer` owns the mutable state of a run; :mod:`advlab.training.run_files` writes its
files. Per-step work is a forward/backward through the objective, an optimiser step and a
scheduler step; metrics are summed on the device and read back once per epoch (or when the
progress bar refreshes), so the loop adds almost nothing to a bare PyTorch loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlab.stats import accuracy_se
from advlab.training.callbacks import LoopCallback
from advlab.training.checkpoint import CHECKPOINT_FORMAT, capture_rng, restore_rng
from advlab.training.data import BatchSource, epoch_batches, shard_batches
from advlab.training.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
)
from advlab.training.objectives import split_objective_output
from advlab.training.protocol import (
    Objective,
    load_objective_state,
    objective_epoch_end,
    objective_state,
)
from advlab.training.selection import select_epoch

logger = logging.getLogger(__name__)

EpochEnd = Callable[[nn.Module, int], dict[str, float]]
_PROGRESS_EVERY = 10  # steps between progress-bar refreshes (each one syncs the device)


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int  # per rank
    seed: int
    checkpoint_every: int
    select_metric: str
    early_stopping_patience: int | None
    progress: bool
    epoch_end: EpochEnd | None
    select_within_se: float = 0.0  # keep the latest epoch within this many standard errors


@dataclass
class LoopState:
    """Everything that a checkpoint must hold to continue a run exactly."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimiser steps done in the current epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None  # the selected epoch's metric
    best_epoch: int | None = None  # the selected epoch
    bad_epochs: int = 0
    stopped: bool = False  # early stopping ended the run
    partial_sums: Tensor | None = None  # (SUMS,) float64, see Trainer._train_step
    partial_time: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)  # e.g. catastrophic overfitting


SUMS = 6  # loss*B, correct, B, B with logits, adversarially correct, B with adversarial logits


class Trainer:
    """Runs epochs of ``objective`` on ``train`` with a given optimiser/scheduler."""

    def __init__(self, model: nn.Module, wrapped: nn.Module, objective: Objective,
                 optimizer: torch.optim.Optimizer, scheduler: Any, train: BatchSource,
                 val: BatchSource | None, device: torch.device, context: DistContext,
                 settings: LoopSettings, on_epoch: Callable[[Trainer, dict[str, Any], bool], None],
                 on_checkpoint: Callable[[dict[str, Any]], None],
                 callbacks: tuple[LoopCallback, ...] = ()) -> None:
        self.model, self.wrapped, self.objective = model, wrapped, objective
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train, self.val, self.device, self.context = train, val, device, context
        self.settings = settings
        self.on_epoch, self.on_checkpoint = on_epoch, on_checkpoint
        self.state = LoopState()
        self._last_lr = optimizer.param_groups[0]["lr"]
        self.callbacks = tuple(callbacks)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        """Train until ``epochs`` are done or early stopping says stop."""
        for callback in self.callbacks:
            callback.on_train_begin(self)
        while not self.state.stopped and self.state.epoch < self.settings.epochs:
            started = time.perf_counter() - self.state.partial_time  # resumed mid-epoch
            sums, train_time = self._train_epoch()
            record = self._epoch_record(sums, train_time)
            record["time_s"] = time.perf_counter() - started
            self.state.partial_time, self.state.partial_sums, self.state.step = 0.0, None, 0
            discarded = [callback.on_epoch_end(self, record) for callback in self.callbacks]
            if not any(discarded):
                self._finish_epoch(_without_collapse(record))

    def _train_epoch(self) -> tuple[Tensor, float]:
        """One pass over this rank's batches (skipping those done before a resume)."""
        state, settings = self.state, self.settings
        batches = epoch_batches(len(self.train), settings.batch_size, settings.seed,
                                state.epoch, self.context)
        sums = torch.zeros(SUMS, dtype=torch.float64, device=self.device)
        if state.partial_sums is not None:
            sums += state.partial_sums.to(self.device)
        bar = self._progress_bar(len(batches))
        self.wrapped.train()
        started = time.perf_counter() - state.partial_time
        loader_seed = settings.seed * 100_003 + state.epoch
        for x, y in self.train.iterate(batches[state.step:], seed=loader_seed):
            self._train_step(x, y, sums)
            state.step += 1
            state.global_step += 1
            if bar is not None:
                self._update_bar(bar, sums)
            every = settings.checkpoint_every
            if every and state.global_step % every == 0 and state.step < len(batches):
                state.partial_time = time.perf_counter() - started
                self.on_checkpoint(self.checkpoint_state(sums))
        if bar is not None:
            bar.close()
        return sums, time.perf_counter() - started

    def _train_step(self, x: Tensor, y: Tensor, sums: Tensor) -> None:
        output = self.objective(self.wrapped, x, y)
        loss, logits, adv_logits = split_objective_output(output, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._last_lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        for callback in self.callbacks:
            callback.on_step_end(self)
        with torch.no_grad():
            batch = float(len(y))
            sums[0] += loss.detach().double() * batch
            sums[2] += batch
            if logits is not None:
                sums[1] += (logits.argmax(dim=1) == y).sum()
                sums[3] += batch
            if adv_logits is not None:
                sums[4] += (adv_logits.argmax(dim=1) == y).sum()
                sums[5] += batch

    # -- end of epoch --------------------------------------------------------------------
    @property
    def evaluation_model(self) -> nn.Module:
        """The model validated and saved as the run's model: the training model, or a
        callback's replacement (the weight average of :class:`~advlab.training.ema.ModelEMA`)."""
        for callback in self.callbacks:
            replacement = callback.evaluation_model()
            if replacement is not None:
                return replacement
        return self.model

    def _epoch_record(self, sums: Tensor, train_time: float) -> dict[str, Any]:
        """The epoch's metrics (identical on every rank)."""
        epoch = self.state.epoch + 1
        totals = all_reduce_sum(sums, self.context).tolist()
        if not math.isfinite(totals[0]):
            raise FloatingPointError(f"the training loss became {totals[0]} in epoch {epoch}; "
                                     "lower the learning rate or check the objective")
        record: dict[str, Any] = {
            "epoch": epoch, "step": self.state.global_step,
            "train_loss": totals[0] / totals[2],
            "train_acc": totals[1] / totals[3] if totals[3] else None,
            "lr": self._last_lr,
            "samples_per_s": totals[2] / max(train_time, 1e-9),
        }
        if totals[5]:
            record["train_adv_acc"] = totals[4] / totals[5]
        if self.val is not None:
            record["val_loss"], record["val_acc"], count = self._validate()
            record["val_acc_se"] = accuracy_se(record["val_acc"], count)
        if self.settings.epoch_end is not None:
            self.evaluation_model.eval()
            extra = self.settings.epoch_end(self.evaluation_model, epoch) or {}
            record.update({k: _to_float(v) for k, v in extra.items()})
        self.model.eval()  # the objective's report comes last: CLIP adapts to train_acc
        metrics, collapse = objective_epoch_end(self.objective, self.model, record)
        record.update({k: _to_float(v) for k, v in metrics.items()})
        if collapse is not None:
            record["collapse"] = collapse  # rank 0's verdict reaches every rank
        return broadcast_object(record, self.context)

    @torch.no_grad()
    def _validate(self) -> tuple[float, float, int]:
        """Mean cross-entropy, accuracy and point count of the validation data, sharded over
        ranks."""
        assert self.val is not None
        model = self.evaluation_model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        batches = shard_batches(len(self.val), max(self.settings.batch_size, 256), self.context)
        for x, y in self.val.iterate(batches):
            logits = model(x)  # (B, K)
            sums[0] += nn.functional.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += (logits.argmax(dim=1) == y).sum()
            sums[2] += len(y)
        loss_sum, correct, count = all_reduce_sum(sums, self.context).tolist()
        return loss_sum / count, correct / count, int(count)

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        """Book-keeping after an epoch: best model, early stopping, files, checkpoint."""
        state, settings = self.state, self.settings
        state.epoch += 1
        state.history.append(record)
        value = record.get(settings.select_metric)
        if value is None and settings.early_stopping_patience is not None:
            raise ValueError(f"early stopping needs the metric {settings.select_metric!r} in each "
                             f"epoch record; got {sorted(record)} (pass val_data or an epoch_end "
                             "hook that returns it, or choose select_metric)")
        improved = value is not None and self._select(float(value), record)
        if value is not None and not improved:
            state.bad_epochs += 1
        patience = settings.early_stopping_patience
        if patience is not None and state.bad_epochs >= patience:
            logger.info("early stopping after epoch %d: no better %s for %d epochs (best %.4f at "
                        "epoch %s)", state.epoch, settings.select_metric, patience,
                        state.best_value, state.best_epoch)
            state.stopped = True
        self.on_epoch(self, record, improved)
        checkpoint = self.checkpoint_state(None)
        self.on_checkpoint(checkpoint)
        for callback in self.callbacks:
            callback.on_epoch_saved(self, checkpoint)

    def _select(self, value: float, record: dict[str, Any]) -> bool:
        """Whether this epoch becomes the run's model (:func:`~advlab.training.selection.select_epoch`
        over the history: the plain maximum, or with ``select_within_se`` the latest epoch within
        that many standard errors of it, read from the records' ``<metric>_se``)."""
        state, settings = self.state, self.settings
        metric, k = settings.select_metric, settings.select_within_se
        name = f"{metric}_se"
        if k > 0 and record.get(name) is None:
            raise ValueError(f"select_within_se={k} needs {name!r} in each epoch record (the "
                             f"standard error of {metric!r}); got {sorted(record)}: use val_acc "
                             "or adv_val_acc, or return it from epoch_end")
        if not math.isfinite(value):
            return False
        selected = select_epoch([r.get(metric) for r in state.history],
                                [r.get(name) for r in state.history], within_se=k)
        if selected != state.epoch:
            return False
        state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        return True

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self, sums: Tensor | None) -> dict[str, Any]:
        """The checkpoint dict (collective under DDP: call on every rank)."""
        rng = gather_objects(capture_rng(self.device), self.context)
        partial = None
        if sums is not None:
            partial = all_reduce_sum(sums.clone(), self.context).cpu()
        state = self.state
        entries: dict[str, Any] = {}
        for callback in self.callbacks:
            entries.update(callback.checkpoint_entries(mid_epoch=sums is not None))
        return {
            **entries,
            "objective": gather_objects(objective_state(self.objective), self.context),
            "events": state.events,
            "format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng, "epoch": state.epoch, "step": state.step,
            "global_step": state.global_step, "history": state.history,
            "best_value": state.best_value, "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs, "stopped": state.stopped,
            "partial_sums": partial, "partial_time": state.partial_time,
            "world_size": self.context.world_size,
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from ``checkpoint`` (weights, optimiser, schedule, RNG, counters)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint["scheduler"] is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        rng = checkpoint["rng"]
        if len(rng) == self.context.world_size:
            restore_rng(rng[self.context.rank], self.device)
        else:
            logger.warning("the checkpoint was written by %d processes, this run has %d: "
                           "dropout and other random draws will not repeat exactly",
                           len(rng), self.context.world_size)
        keep = ("epoch", "step", "global_step", "history", "best_value", "best_epoch",
                "bad_epochs", "stopped", "partial_time")
        for key in keep:
            setattr(self.state, key, checkpoint[key])
        self.state.events = list(checkpoint.get("events") or [])
        load_objective_state(self.objective, checkpoint.get("objective"), self.context.rank,
                             self.context.world_size)
        for callback in self.callbacks:
            callback.on_restore(self, checkpoint)
        partial = checkpoint["partial_sums"]
        self.state.partial_sums = None
        if partial is not None:  # rank 0 carries the sums; the others add zeros
            partial = partial.to(torch.float64)
            self.state.partial_sums = partial if self.context.is_main else torch.zeros_like(partial)

    # -- progress ------------------------------------------------------------------------
    def _progress_bar(self, total: int) -> Any:
        if not (self.settings.progress and self.context.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.state.step, leave=False, dynamic_ncols=True,
                    desc=f"epoch {self.state.epoch + 1}/{self.settings.epochs}")

    def _update_bar(self, bar: Any, sums: Tensor) -> None:
        bar.update(1)
        if self.state.step % _PROGRESS_EVERY == 0:
            loss, correct, count, with_logits, adv_correct, with_adv = sums.tolist()
            postfix = {"loss": f"{loss / max(count, 1):.4f}"}
            if with_logits:
                postfix["acc"] = f"{correct / with_logits:.3f}"
            if with_adv:
                postfix["adv_acc"] = f"{adv_correct / with_adv:.3f}"
            bar.set_postfix(postfix, refresh=False)


def _without_collapse(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` minus a collapse that no callback handled (the objective reported one without
    setting ``watches_collapse``, so fit installed no rollback): logged, the epoch is kept."""
    collapse = record.pop("collapse", None)
    if collapse is not None:
        logger.warning("epoch %d: the objective reported a collapse (%s) but does not set "
                       "watches_collapse; nothing rolls back", record["epoch"], collapse)
    return record


def _to_float(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
