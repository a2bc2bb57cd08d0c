"""Training: one fit loop for every objective, with checkpoints, resume and torchrun/DDP.

    from advlab.training import fit, get_objective
    result = fit(model, train_ds, val_data=val_ds, epochs=5, run_dir="runs/x")
    result = fit(model, train_ds, objective=get_objective("none"), resume=True, run_dir="runs/x")

Robust training objectives (FGSM-mix, PGD-AT, fast FGSM with random start, N-FGSM, GradAlign,
TRADES, CURE, CLIP, noise, IBP) live in :mod:`advlab.training.defenses` and register in
:data:`OBJECTIVES` (:mod:`advlab.training.protocol`, with the objective protocol types); the loop
calls callbacks (:mod:`advlab.training.callbacks`) such as the catastrophic-overfitting rollback;
:func:`adversarial_validation` selects the most robust epoch; ``fit(init=run_dir)`` fine-tunes;
``fit(ema_decay=0.999)`` keeps a weight average (:mod:`advlab.training.ema`); the learning-rate
schedules (``onecycle``, ``cosine``, ``cyclic``, ``multistep``, ``constant``) are in
:mod:`advlab.training.optim`; named recipes (model, defense, schedule, budget) in
:mod:`advlab.training.recipes`; run ``torchrun --nproc_per_node=N`` for data-parallel training.

    hook = adversarial_validation(val_ds, ThreatModel("linf", 0.1))
    fit(model, train_ds, val_data=val_ds, objective=get_objective("pgd-at", eps=0.1, steps=7),
        epoch_end=hook, select_metric="adv_val_acc", run_dir="runs/x")
"""

from advlab.training.checkpoint import RESUME_IGNORED_KEYS, load_checkpoint
from advlab.training.fit import FitResult, fit, load_init
from advlab.training.objectives import (
    OBJECTIVES,
    EpochReport,
    NamedObjective,
    Objective,
    ObjectiveContext,
    ObjectiveOutput,
    get_objective,
    register_objective,
    standard_objective,
    unwrap_model,
    watches_collapse,
)
from advlab.training.validation import adversarial_validation

__all__ = [
    "OBJECTIVES",
    "RESUME_IGNORED_KEYS",
    "EpochReport",
    "FitResult",
    "NamedObjective",
    "Objective",
    "ObjectiveContext",
    "ObjectiveOutput",
    "adversarial_validation",
    "fit",
    "get_objective",
    "load_checkpoint",
    "load_init",
    "register_objective",
    "standard_objective",
    "unwrap_model",
    "watches_collapse",
]
