"""What a training run leaves behind: the run directory and the store records.

``run_dir/`` holds ``config.json`` (the full run config), ``history.json`` (one record per
epoch), ``checkpoint.pt`` (see :mod:`advlab.training.checkpoint`), ``last.safetensors/json``
(the weights after the latest epoch) and ``model.safetensors/json`` (the best epoch by
``select_metric``, or the latest when there is no such metric; ``load_model(run_dir)`` loads
it). All written atomically, by rank 0 only. With a store, the run is registered under its name
and every epoch record is logged as metrics.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._utils import atomic_write_json
from advlab.store import Store
from advlab.training.checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

BEST_NAME, LAST_NAME = "model", "last"


def _format_record(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        if key in ("epoch", "step"):
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class RunRecorder:
    """Writes the run directory and the store records of one ``fit`` call (rank 0 only)."""

    def __init__(self, run_dir: Path | None, store: Store | str | Path | None,
                 run_name: str | None, config: dict[str, Any], is_main: bool) -> None:
        self.run_dir = run_dir
        self.config = config
        self.is_main = is_main
        if store is not None and run_name is None and run_dir is None:
            raise ValueError("logging to a store needs run_name= (or a run_dir)")
        self.run_name: str = run_name or (run_dir.name if run_dir is not None else "run")
        self._owns_store = store is not None and not isinstance(store, Store)
        self.store: Store | None = None
        if store is not None and is_main:
            self.store = store if isinstance(store, Store) else Store(store)
        self.best_state: dict[str, torch.Tensor] | None = None  # best weights seen in this process

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None

    def load_resume_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (checked against the config), or None to start anew."""
        path = self.checkpoint_path
        if path is None:
            raise ValueError("resume=True needs run_dir= (the directory of the run to continue)")
        if not path.exists():
            logger.info("no checkpoint in %s: starting a new run", self.run_dir)
            return None
        checkpoint = load_checkpoint(path)
        check_resumable(checkpoint["config"], self.config, path)
        logger.info("resuming %s after epoch %d, step %d", self.run_dir, checkpoint["epoch"],
                    checkpoint["step"])
        return checkpoint

    def start(self, model: nn.Module, resumed_epoch: int | None) -> None:
        """Write config.json and register the run (clearing metrics that will be redone)."""
        if not self.is_main:
            return
        if self.run_dir is not None and not has_recipe(model):
            logger.warning("the model has no advlab_spec (build it with advlab.create_model, or "
                           "load a model saved with save_model(..., factory=...)): "
                           "%s gets checkpoint.pt and history.json but no model.safetensors",
                           self.run_dir)
        if self.run_dir is not None:
            (self.run_dir / FINISHED_NAME).unlink(missing_ok=True)  # resumed: running again
            atomic_write_json(self.run_dir / "config.json", self.config)
        if self.store is not None:
            self.store.add_run(self.run_name, self._run_path(), self.config,
                               {"status": "running"})
            self.store.clear_metrics(self.run_name, from_epoch=(resumed_epoch or 0) + 1)

    def _run_path(self) -> str:
        return str(self.run_dir.resolve()) if self.run_dir is not None else ""

    def epoch(self, model: nn.Module, record: dict[str, Any], improved: bool, select: bool,
              history: list[dict[str, Any]]) -> None:
        """After an epoch: keep the best weights, write the files, log the record."""
        if improved:
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in model.state_dict().items()}
        if not self.is_main:
            return
        logger.info("epoch %d: %s", record["epoch"], _format_record(record))
        if self.run_dir is not None and has_recipe(model):
            metadata = {"epoch": record["epoch"], "metrics": record, "run_name": self.run_name}
            _save_weights(model, self.run_dir, LAST_NAME, metadata)
            if improved or not select:
                _save_weights(model, self.run_dir, BEST_NAME, metadata)
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / "history.json", history)
        if self.store is not None:
            self.store.log_metrics(self.run_name, record["epoch"], record)

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoint.pt`` atomically (with the config, for resume checks)."""
        if self.is_main and self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, {**state, "config": self.config})

    def best_weights(self, model: nn.Module | None = None) -> dict[str, torch.Tensor] | None:
        """The best weights: from this process, or from ``model.safetensors`` after a resume
        (that file holds the inner model of a wrapped ``model``: its keys are mapped back)."""
        if self.best_state is not None:
            return self.best_state
        if self.run_dir is not None and (self.run_dir / f"{BEST_NAME}.safetensors").exists():
            from safetensors.torch import load_file

            saved = load_file(self.run_dir / f"{BEST_NAME}.safetensors")
            return saved if model is None else _as_state_of(model, saved)
        return None

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run directory finished; record the outcome in the store (closing it if we
        opened it)."""
        if self.is_main and self.run_dir is not None:
            atomic_write_json(self.run_dir / FINISHED_NAME, summary)
        if self.store is None:
            return
        try:
            self.store.add_run(self.run_name, self._run_path(), self.config,
                               {"status": "finished", **summary})
        finally:
            if self._owns_store:
                self.store.close()


def _as_state_of(model: nn.Module, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model``'s state dict with the tensors ``save_model`` wrote for it (for a model with a
    recipe, those of its inner model, under the inner model's prefix)."""
    from advlab.models.recipe import strip_wrappers

    recipe = getattr(model, "advlab_factory", None)
    if not isinstance(recipe, dict):
        return saved
    inner = strip_wrappers(model, recipe)
    prefix = next((f"{name}." for name, module in model.named_modules()
                   if module is inner and name), "")
    return {**model.state_dict(), **{prefix + key: value for key, value in saved.items()}}


def has_recipe(model: nn.Module) -> bool:
    """Whether :func:`advlab.save_model` can save ``model`` without being told how to build it:
    a ``create_model`` spec, or the factory of a model loaded from a factory-saved file."""
    return hasattr(model, "advlab_spec") or isinstance(getattr(model, "advlab_factory", None), dict)


def _save_weights(model: nn.Module, run_dir: Path, name: str, metadata: dict[str, Any]) -> None:
    from advlab.models import save_model

    save_model(model, run_dir, name=name, **metadata)  # with its recipe (advlab_factory) if any


# ----------------------------------------------------------------------------- never lose work
LOCK_NAME = ".advlab.lock"
#: What a training run writes into its directory (removed by :func:`clear_run_dir`).
FINISHED_NAME = "finished.json"
RUN_FILES = ("config.json", "history.json", CHECKPOINT_NAME, "train_result.json", FINISHED_NAME,
             f"{BEST_NAME}.json", f"{BEST_NAME}.safetensors", f"{LAST_NAME}.json",
             f"{LAST_NAME}.safetensors", "architecture.pt", "architecture.pt2")


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""

    advlab_user_error = True  # the command line shows it as one clear line


class RunExistsError(FileExistsError):
    """The run directory already holds a run, and neither resume nor overwrite was asked for."""

    advlab_user_error = True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.advlab.lock`` (pid, host, start time) while writing the run.

    A second process is refused with :class:`RunLockedError` naming the holder; a lock left by
    a dead process on this host (a kill, a crash) is taken over with a warning. Re-entrant in
    one process (the CLI locks before ``fit`` does).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    owned = False
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                break  # this process holds it already
            if holder.get("host") not in (None, me["host"]) or _pid_alive(int(holder.get("pid") or 0)):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
                raise RunLockedError(
                    f"{run_dir} is being written by another process (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {since}); wait for it to finish, or use another "
                    f"--out. If that process is gone, delete {path}") from None
            logger.warning("taking over the stale lock of %s (pid %s is not running)", run_dir,
                           holder.get("pid"))
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        owned = True
        break
    try:
        yield
    finally:
        if owned:
            path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def existing_run(run_dir: Path) -> str | None:
    """``"finished"``, ``"interrupted"`` or None: what ``run_dir`` holds."""
    if (run_dir / "train_result.json").exists() or (run_dir / FINISHED_NAME).exists():
        return "finished"
    if any((run_dir / name).exists() for name in RUN_FILES):
        return "interrupted"
    return None


def guard_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to write over a run unless ``resume`` (continue it) or ``overwrite`` (replace it:
    its run files are deleted first). The old files are untouched when refused."""
    state = existing_run(run_dir)
    if state is None or resume:
        return
    if not overwrite:
        what = ("a finished run" if state == "finished" else
                "an interrupted run (resume it with --resume / resume=True)")
        raise RunExistsError(f"{run_dir} already holds {what}; nothing was changed. Use another "
                             "--out, --resume to continue it, or --force (overwrite=True) to "
                             "replace it")
    logger.warning("replacing the run in %s (--force)", run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for stale in list(run_dir.glob("evaluate-*.json")) + list(run_dir.glob("adv-*.npz")):
        stale.unlink()


def forget_run(store: Store, run_name: str) -> None:
    """Delete a replaced run's metrics and evaluations from the store (its name is reused)."""
    with store.conn:
        store.conn.execute("DELETE FROM metrics WHERE run_name = ?", (run_name,))
        store.conn.execute("DELETE FROM evaluations WHERE run_name = ?", (run_name,))
