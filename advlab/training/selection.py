"""Which epoch a run keeps as its model: the maximum of a validation metric, or the latest epoch
within its noise.

Early stopping on the (adversarial) validation accuracy is the remedy for robust overfitting
(Rice, Wong & Kolter 2020). Taken literally -- the epoch of the highest figure -- it also reacts
to noise: on 500 validation points an accuracy near 75 % has a standard error of ~1.9 points,
so with a one-cycle schedule the maximum can fall on an epoch before the learning-rate
annealing. ``within_se = k > 0`` keeps the *latest* epoch whose figure is at least the maximum
minus ``k`` standard errors of the maximum: the validation cannot tell it from the best, and a
decline larger than the noise (overfitting) still moves the choice back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def select_epoch(values: Sequence[float | None], ses: Sequence[float | None] | None = None,
                 within_se: float = 0.0) -> int | None:
    """The 1-based epoch to keep, or None when no epoch has a finite value.

    Args:
        values: the metric of each epoch (higher is better; None or NaN: not measured).
        ses: the standard error of each value (needed when ``within_se > 0``).
        within_se: 0 keeps the first epoch of the highest value; ``k > 0`` keeps the last epoch
            whose value is >= max - k * se(max).
    """
    finite = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return None
    top, best = max(finite, key=lambda item: (item[1], -item[0]))  # the first maximum
    if within_se <= 0:
        return top + 1
    if ses is None or ses[top] is None:
        raise ValueError(f"within_se={within_se} needs the standard error of epoch {top + 1}")
    floor = best - within_se * float(ses[top])
    return max(i for i, v in finite if v >= floor) + 1


def decline_after_kept(history: Sequence[dict], metric: str, kept_epoch: int | None,
                       z: float = 2.0) -> str | None:
    """A warning when the last epoch's ``metric`` lies more than ``z`` standard errors of the
    difference below the kept epoch's (robust overfitting, Rice et al. 2020, or overfitting to
    the training attack), else None.

    ``history``: the epoch records (1-based ``epoch`` order) with ``metric`` and ``<metric>_se``.
    The two figures come from the same validation points, so treating them as independent
    (``sqrt(se_kept**2 + se_last**2)``) overstates the noise: a flagged decline is real.
    """
    if not kept_epoch or len(history) <= kept_epoch:
        return None
    kept, last = history[kept_epoch - 1], history[-1]
    values = (kept.get(metric), last.get(metric), kept.get(f"{metric}_se"), last.get(f"{metric}_se"))
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    top, end, se_top, se_end = (float(v) for v in values)
    noise = math.hypot(se_top, se_end)
    if noise <= 0 or top - end <= z * noise:
        return None
    return (f"{metric} fell from {top:.1%} (epoch {kept_epoch}, kept) to {end:.1%} at the last "
            f"epoch {last.get('epoch', len(history))} ({(top - end) / noise:.1f} standard errors): "
            "overfitting -- to the training attack when it is sudden (compare train_adv_acc); "
            "the run's model is the kept epoch, last.safetensors is the overfit one")
