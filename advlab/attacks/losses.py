"""Per-sample attack losses: larger is more adversarial. Shapes: logits ``(B, K)``, labels ``(B,)``.

* ``ce``: cross-entropy (Goodfellow et al. 2015; Madry et al. 2018).
* ``cw``: the Carlini & Wagner (2017) margin ``max_{j != y} z_j - z_y``.
* ``dlr``: the Difference of Logits Ratio of Croce & Hein (2020), invariant to shifts and
  rescaling of the logits, so it does not saturate: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``.

Targeted variants take the target classes in place of the labels and are maximised to reach them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from advlab._utils import canonical_name

LossFn = Callable[[Tensor, Tensor], Tensor]


def _other_max(logits: Tensor, y: Tensor) -> Tensor:
    """Largest logit among the classes other than ``y``: ``(B,)``."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.amax(dim=1)


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (positive once misclassified)."""
    return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 4); needs at least 3 classes."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}; use loss='ce' or 'cw'")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - _other_max(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)


def ce_targeted_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Negative cross-entropy to the target (maximise to reach ``target``)."""
    return -F.cross_entropy(logits, target, reduction="none")


def cw_targeted_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``z_t - max_{j != t} z_j`` (positive once classified as ``target``)."""
    return -cw_loss(logits, target)


def dlr_targeted_loss(logits: Tensor, target: Tensor, y: Tensor | None = None) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 5): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    ``y`` is the true label; when omitted, the current top class stands in for it.
    Needs at least 4 classes.
    """
    if logits.shape[1] < 4:
        raise ValueError(f"targeted DLR needs at least 4 classes, the model has {logits.shape[1]}; use loss='ce'")
    top = logits.sort(dim=1, descending=True).values
    y = logits.argmax(dim=1) if y is None else y
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_loss, "dlr": dlr_loss}
TARGETED_LOSSES: dict[str, LossFn] = {"ce": ce_targeted_loss, "cw": cw_targeted_loss,
                                      "dlr": dlr_targeted_loss}


def get_loss(name: str | LossFn, *, targeted: bool = False) -> LossFn:
    """Look up a loss by name (``ce``, ``cw``/``margin``, ``dlr``) or pass a callable through."""
    if callable(name):
        return name
    key = canonical_name(name)
    key = "cw" if key in ("margin", "cw_margin") else key
    table = TARGETED_LOSSES if targeted else LOSSES
    if key not in table:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(table))}")
    return table[key]


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j``: positive when correctly classified, ``(B,)``."""
    return -cw_loss(logits, y)


__all__ = ["LOSSES", "TARGETED_LOSSES", "ce_loss", "cw_loss", "dlr_loss", "get_loss", "margin",
           "ce_targeted_loss", "cw_targeted_loss", "dlr_targeted_loss"]
