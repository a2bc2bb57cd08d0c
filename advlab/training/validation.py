"""Adversarial validation: early stopping and model selection on the adversarial error.

Goodfellow, Shlens & Szegedy (2015, Sec. 6) select the training length on the *adversarial*
validation error, not the clean one: the epochs that generalise best on clean data are not those
most robust. :func:`adversarial_validation` builds the ``epoch_end`` hook of
:func:`advlab.training.fit` that measures it after every epoch with :func:`advlab.evaluate`
(``fast`` preset: APGD-CE, 20 steps; no sanity checks) on a fixed subset of the validation
split, and returns ``{"adv_val_acc": ..., "adv_val_acc_se": ...}`` (the accuracy and its
standard error, which ``select_within_se`` uses); pass ``select_metric="adv_val_acc"`` (and
``early_stopping_patience``) so the run keeps the most robust epoch as its model:

    hook = adversarial_validation(val_data, ThreatModel("linf", 0.1), n=500)
    fit(model, train, val_data=val_data, objective="pgd-at", epoch_end=hook,
        select_metric="adv_val_acc", early_stopping_patience=3, ...)

Under torchrun each rank attacks its share of the subset and the counts are summed, so the cost
is split and every rank gets the same value.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from advlab.stats import accuracy_se
from advlab.threat import ThreatModel
from advlab.training.data import as_tensors
from advlab.training.loop import EpochEnd

ADV_METRIC = "adv_val_acc"


def adversarial_validation(data: Any, threat: ThreatModel, *, n: int | None = 500,
                           attacks: str = "fast", seed: int = 0,
                           batch_size: int = 500) -> EpochEnd:
    """An ``epoch_end(model, epoch) -> {"adv_val_acc": float, "adv_val_acc_se": float}`` hook
    for ``fit``.

    Args:
        data: the validation split, an ``(x, y)`` pair or a Dataset with ``.x``/``.y``.
        threat: the threat model to validate against (usually the training one).
        n: attack the first ``n`` points only (None: all); 500 keeps it cheap.
        attacks: an :func:`advlab.evaluate` preset (``"fast"``) or list of steps.
        seed: the attacks' random starts (the same every epoch, so epochs are comparable).
        batch_size: attack batch size.
    """
    tensors = as_tensors(data)
    if tensors is None:
        raise ValueError("adversarial validation needs the validation data as (x, y) tensors "
                         "or a Dataset with .x and .y")
    x, y = tensors
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int or None, got {n!r}")
        x, y = x[:n], y[:n]

    def epoch_end(model: nn.Module, epoch: int) -> dict[str, float]:
        from advlab.evaluation import evaluate

        rank, world = _rank_and_world()
        device = next(model.parameters()).device
        x_part, y_part = x[rank::world].to(device), y[rank::world].to(device)
        robust = 0.0
        if len(x_part):
            result: Any = evaluate(model, x_part, y_part, threat, attacks=attacks, sanity=False,
                                   seed=seed + rank, batch_size=batch_size, batches=False)
            robust = float(result.robust_correct.sum())
        counts = torch.tensor([robust, float(len(x_part))], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(counts)
        accuracy, total = (counts[0] / counts[1].clamp_min(1)).item(), int(counts[1].item())
        return {ADV_METRIC: accuracy, f"{ADV_METRIC}_se": accuracy_se(accuracy, total)}

    return epoch_end


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
