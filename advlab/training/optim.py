"""Optimisers and learning-rate schedules for :func:`advlab.training.fit`.

Schedules are stepped once per optimiser step: ``onecycle`` is ``torch.optim.lr_scheduler.
OneCycleLR`` with ``max_lr = lr`` (the cyclic schedule Wong, Rice & Kolter 2020 use for fast
adversarial training), ``cosine`` anneals from ``lr`` to 0 (``CosineAnnealingLR``) and
``constant`` keeps ``lr``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

from advlab._checks import check_choice

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """Adam (L2 ``weight_decay`` added to the gradient) or SGD with ``momentum`` (no Nesterov)."""
    name = check_choice("optimizer", name, OPTIMIZERS, fold=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=False)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, lr: float,
                    total_steps: int) -> LRScheduler | None:
    """The per-step schedule over ``total_steps`` optimiser steps (``None`` for constant)."""
    name = check_choice("schedule", name, SCHEDULES, fold=True)
    if name == "onecycle":
        return OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 2))
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return None
