"""Optimisers and learning-rate schedules for :func:`advlab.training.fit`.

Schedules are stepped once per optimiser step, laid out over the run's ``total_steps``:

* ``onecycle`` -- ``torch.optim.lr_scheduler.OneCycleLR`` with ``max_lr = lr`` (warm-up, then
  cosine annealing; advlab's default);
* ``cyclic`` -- the triangular cycle of Wong, Rice & Kolter (2020), "Fast is better than free":
  linear from 0 up to ``lr`` over the first 2/5 of training, then linearly down to 0;
* ``multistep`` -- piecewise-constant decay as in Madry et al. (2018) and Rice, Wong & Kolter
  (2020), "Overfitting in adversarially robust deep learning": ``lr``, then ``lr / 10`` after
  half of training and ``lr / 100`` after three quarters (their 200-epoch CIFAR-10 schedule
  decays at epochs 100 and 150);
* ``cosine`` -- anneals from ``lr`` to 0 (``CosineAnnealingLR``);
* ``constant`` -- keeps ``lr``.

``cyclic`` and ``multistep`` are ``LambdaLR`` schedules whose factor is a pure function of the
step count, so their state (the step count) resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, OneCycleLR

from advlab._checks import check_choice

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("onecycle", "cyclic", "multistep", "cosine", "constant")

#: ``multistep``: (fraction of training, factor) -- lr x 0.1 at 1/2, x 0.01 at 3/4.
MULTISTEP_MILESTONES = ((0.5, 0.1), (0.75, 0.01))
#: ``cyclic``: the fraction of training at which the triangle peaks (Wong et al.: 2/5).
CYCLIC_PEAK = 0.4


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """Adam (L2 ``weight_decay`` added to the gradient) or SGD with ``momentum`` (no Nesterov)."""
    name = check_choice("optimizer", name, OPTIMIZERS, fold=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=False)


def schedule_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """The lr factor ``step -> lr(step) / lr`` of the ``cyclic`` or ``multistep`` schedule
    over ``total_steps`` optimiser steps (step 0 is the first update)."""
    total = max(int(total_steps), 1)
    if name == "cyclic":
        peak = max(CYCLIC_PEAK * total, 1.0)

        def cyclic(step: int) -> float:
            # the lr of step t is taken at t + 1, so that the first update is not at lr 0
            t = min(step + 1, total)
            return t / peak if t <= peak else max(total - t, 0) / max(total - peak, 1.0)

        return cyclic
    if name == "multistep":
        def multistep(step: int) -> float:
            factor = 1.0
            for fraction, value in MULTISTEP_MILESTONES:
                if step >= fraction * total:
                    factor = value
            return factor

        return multistep
    raise ValueError(f"schedule_factor knows 'cyclic' and 'multistep', not {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, lr: float,
                    total_steps: int) -> LRScheduler | None:
    """The per-step schedule over ``total_steps`` optimiser steps (``None`` for constant)."""
    name = check_choice("schedule", name, SCHEDULES, fold=True)
    if name == "onecycle":
        return OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 2))
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name in ("cyclic", "multistep"):
        return LambdaLR(optimizer, schedule_factor(name, total_steps))
    return None
