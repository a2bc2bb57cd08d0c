"""How the fit loop talks to stateful objectives: their state in checkpoints, their end-of-epoch
report, and the rollback after a collapse (catastrophic overfitting, Wong et al. 2020).

:class:`Rollback` keeps, for objectives with ``watches_collapse``, a deep copy of the checkpoint
taken after the last epoch that passed the objective's check (or before the first epoch). It
travels inside mid-epoch checkpoints (``"rollback"``) so that a resumed run can still roll
back exactly like the uninterrupted one; after an epoch-end checkpoint it *is* that checkpoint.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from torch import nn

from advlab.training.objectives import Objective, objective_hook, watches_collapse

logger = logging.getLogger(__name__)

EVENT = "catastrophic_overfitting"


def objective_state(objective: Objective) -> dict[str, Any] | None:
    """The objective's ``state_dict()``, or None for stateless objectives."""
    hook = objective_hook(objective, "state_dict")
    return hook() if hook is not None else None


def load_objective_state(objective: Objective, states: list[Any] | None, rank: int,
                         world_size: int) -> None:
    """Load this rank's saved objective state (rank 0's when the number of processes changed)."""
    hook = objective_hook(objective, "load_state_dict")
    if hook is not None and states and states[0] is not None:
        hook(states[rank] if len(states) == world_size else states[0])


def objective_epoch_end(objective: Objective, model: nn.Module,
                        record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The objective's end-of-epoch metrics and collapse description (None: no collapse)."""
    hook = objective_hook(objective, "epoch_end")
    if hook is None:
        return {}, None
    report = hook(model, dict(record))
    return dict(report.metrics), report.collapse


class Rollback:
    """The state to return to when the objective reports a collapse."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.enabled = watches_collapse(objective)
        self.good: dict[str, Any] | None = None

    def remember(self, checkpoint: dict[str, Any]) -> None:
        """Keep a copy of an epoch-end checkpoint (the live tensors move on)."""
        if self.enabled:
            self.good = copy.deepcopy(checkpoint)

    def load(self, checkpoint: dict[str, Any]) -> None:
        """After resuming from ``checkpoint``: its rollback state, or itself at an epoch end."""
        if self.enabled:
            good = checkpoint.get("rollback") or (checkpoint if checkpoint["step"] == 0 else None)
            self.good = copy.deepcopy(good)

    def state(self) -> dict[str, Any] | None:
        """A copy to restore from (the optimiser keeps and mutates what it loads)."""
        return copy.deepcopy(self.good)

    def remedy(self, events: list[dict[str, Any]]) -> str | None:
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
