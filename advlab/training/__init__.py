"""Training: one fit loop for every objective, with checkpoints, resume and torchrun/DDP.

    from advlab.training import fit, get_objective
    result = fit(model, train_ds, val_data=val_ds, epochs=5, run_dir="runs/x")
    result = fit(model, train_ds, objective=get_objective("none"), resume=True, run_dir="runs/x")

Robust training objectives (FGSM-mix, PGD-AT, TRADES, ...) register in
:mod:`advlab.training.objectives`; run ``torchrun --nproc_per_node=N`` for data-parallel training.
"""

from advlab.training.checkpoint import RESUME_IGNORED_KEYS, load_checkpoint
from advlab.training.fit import FitResult, fit
from advlab.training.objectives import (
    OBJECTIVES,
    NamedObjective,
    Objective,
    get_objective,
    register_objective,
    standard_objective,
    unwrap_model,
)

__all__ = [
    "OBJECTIVES",
    "RESUME_IGNORED_KEYS",
    "FitResult",
    "NamedObjective",
    "Objective",
    "fit",
    "get_objective",
    "load_checkpoint",
    "register_objective",
    "standard_objective",
    "unwrap_model",
]
