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
