"""Callbacks of the fit loop: behaviour that not every run needs, outside the generic loop.

:class:`LoopCallback` lists the hooks :class:`~advlab.training.loop.Trainer` calls; fit installs
:class:`~advlab.training.rollback.RollbackOnCollapse` for objectives that watch for a collapse and
:class:`~advlab.training.ema.ModelEMA` when asked for weight averaging.
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: The :class:`~advlab.training.loop.Trainer` calling the hooks (not imported: the loop imports
#: this module).
Trainer = Any


class LoopCallback:
    """Hooks the loop calls (all optional: the base class does nothing). Used by fit for
    behaviour that is not part of every run, e.g. :class:`~advlab.training.rollback.RollbackOnCollapse`."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first epoch of :meth:`Trainer.run` (also when resuming)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimiser (and scheduler) step, e.g. to update a weight average."""

    def evaluation_model(self) -> nn.Module | None:
        """The model to validate and save as the run's model instead of the training model
        (e.g. :class:`~advlab.training.ema.ModelEMA`'s average), or None."""
        return None

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> bool:
        """After an epoch's record is complete; return True to discard the epoch (the callback
        has restored a state itself), False to let the loop finish it."""
        return False

    def on_epoch_saved(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        """After the epoch-end checkpoint ``checkpoint`` was handed to the writer."""

    def checkpoint_entries(self, *, mid_epoch: bool) -> dict[str, Any]:
        """Entries to add to every checkpoint (they must load with ``weights_only=True``)."""
        return {}

    def on_restore(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        """After :meth:`Trainer.restore` loaded ``checkpoint``."""
