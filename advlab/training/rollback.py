"""Rollback after a collapse (catastrophic overfitting, Wong et al. 2020), as a fit-loop callback.

:func:`~advlab.training.fit` installs a :class:`RollbackOnCollapse` when the objective sets
``watches_collapse``. The callback keeps a deep copy of the checkpoint taken after the last
epoch that passed the objective's check (or before the first epoch). When the objective reports
a collapse at the end of an epoch, the callback restores that state, asks the objective for its
remedy (``after_rollback(count)``: e.g. a lower step size) or stops the run, records the event,
and tells the loop to discard the epoch. The copy travels inside mid-epoch checkpoints
(``"rollback"``) so that a resumed run can still roll back exactly like the uninterrupted one;
after an epoch-end checkpoint it *is* that checkpoint.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from advlab.training.callbacks import LoopCallback
from advlab.training.loop import Trainer
from advlab.training.protocol import Objective, objective_hook

logger = logging.getLogger(__name__)

EVENT = "catastrophic_overfitting"


class RollbackOnCollapse(LoopCallback):
    """Return to the last good epoch when the objective reports a collapse."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.good: dict[str, Any] | None = None

    # -- the loop's hooks ----------------------------------------------------------------
    def on_train_begin(self, trainer: Trainer) -> None:
        if self.good is None and trainer.state.step == 0:
            self.good = copy.deepcopy(trainer.checkpoint_state(None))  # before the first epoch

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> bool:
        """Roll back when ``record`` carries a collapse; True means "discard this epoch"."""
        collapse = record.pop("collapse", None)
        if collapse is None:
            return False
        state = trainer.state
        events, good = state.events, copy.deepcopy(self.good)  # the optimiser mutates what it loads
        remedy, rolled_back_to = None, None
        if good is not None:  # None only when resuming a checkpoint without rollback state
            trainer.restore(good)  # also keeps a copy of it as the rollback state
            remedy, rolled_back_to = self._remedy(events), state.epoch
        state.stopped = state.stopped or remedy is None
        state.events = [*events, collapse_event(record, collapse, rolled_back_to, remedy)]
        trainer.on_checkpoint(trainer.checkpoint_state(None))
        return True

    def on_epoch_saved(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        self.good = copy.deepcopy(checkpoint)  # the live tensors move on

    def checkpoint_entries(self, *, mid_epoch: bool) -> dict[str, Any]:
        return {"rollback": self.good if mid_epoch else None}

    def on_restore(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        """After resuming from ``checkpoint``: its rollback state, or itself at an epoch end."""
        good = checkpoint.get("rollback") or (checkpoint if checkpoint["step"] == 0 else None)
        self.good = copy.deepcopy(good)

    # -- helpers -------------------------------------------------------------------------
    def _remedy(self, events: list[dict[str, Any]]) -> str | None:
        """Ask the restored objective for its remedy after one more collapse (None: stop)."""
        count = 1 + sum(event.get("event") == EVENT for event in events)
        hook = objective_hook(self.objective, "after_rollback")
        return hook(count) if hook is not None else None


def collapse_event(record: dict[str, Any], detail: str, rolled_back_to: int | None,
                   remedy: str | None) -> dict[str, Any]:
    """The event recorded in the run (``FitResult.events``, the checkpoint, the store), logged."""
    epoch = record["epoch"]
    where = (f"rolled back to epoch {rolled_back_to}" if rolled_back_to is not None
             else "could not roll back (no saved state)")
    logger.warning("catastrophic overfitting detected at epoch %d: %s; %s and %s", epoch, detail,
                   where, remedy or "stopped the run (its best weights are kept)")
    return {"event": EVENT, "epoch": epoch, "detail": detail, "rolled_back_to": rolled_back_to,
            "action": remedy or "stopped", "metrics": record}
