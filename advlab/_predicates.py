"""Predicates on model outputs shared by the attacks and the evaluation (a bottom module: it
imports only torch, so every layer of the package may use it)."""

from __future__ import annotations

import torch
from torch import Tensor

#: Tolerance on the row sums of ``(B, K)`` outputs (float32 softmax rows sum to 1 within ~1e-6).
ROW_SUM_ATOL = 1e-3


def looks_like_probabilities(logits: Tensor) -> bool:
    """True when ``logits`` ``(B, K)`` is non-empty, non-negative and every row sums to one.

    A model that ends in a softmax returns such rows; its saturated outputs hide gradients, so
    attacks warn and :func:`advlab.evaluate` raises the ``probabilities`` flag. An empty batch
    says nothing and gives False.
    """
    if logits.numel() == 0:
        return False
    row_sums = logits.sum(dim=1)
    return bool((logits >= 0).all()) and torch.allclose(row_sums, torch.ones_like(row_sums),
                                                        atol=ROW_SUM_ATOL)
