"""Check a model against the data it will see, with one forward pass, before any real work.

Every mismatch is a :class:`ModelDataMismatch` (a ValueError) naming both sides and the fix:
input shape (including flat vs image data and channels-last images), number of output classes
vs the labels of the whole split, non-finite outputs, and outputs that are probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advlab._predicates import looks_like_probabilities

__all__ = ["ModelDataMismatch", "check_model_data"]


class ModelDataMismatch(ValueError):
    """The model and the data do not fit together; the message says how to fix it."""


def _shape_hint(shape: tuple[int, ...], expected: tuple[int, ...] | None) -> str:
    sample = shape[1:]
    if expected is not None and len(expected) == 3 and len(sample) == 1:
        return (f" The data is flat (N, {sample[0]}) but the model takes images {expected}: "
                f"reshape it, x.reshape(-1, {', '.join(map(str, expected))}).")
    if len(sample) == 3 and sample[-1] in (1, 3, 4) and sample[0] not in (1, 3, 4):
        return (" The data looks channels-last (N, H, W, C); PyTorch models take channels-first "
                "(N, C, H, W): x.permute(0, 3, 1, 2) (numpy: x.transpose(0, 3, 1, 2)).")
    if expected is not None and len(expected) == 3 and len(sample) == 3 and sample[1:] != expected[1:]:
        return (f" The images are {sample[1]}x{sample[2]} but the model was built for "
                f"{expected[1]}x{expected[2]}: resize them (--image-size {expected[1]} for an "
                "image folder) or use a model built for this size.")
    return ""


def check_model_data(model: nn.Module, x: Tensor, y: Tensor, *, what: str = "the data") -> Tensor:
    """Run ``model`` on the probe batch ``x`` ``(B, ...)``; check it against labels ``y``
    ``(N,)`` (the whole split). Returns the probe's logits ``(B, K)``."""
    spec: dict[str, Any] = getattr(model, "advlab_spec", None) or getattr(
        model[-1] if isinstance(model, nn.Sequential) else model, "advlab_spec", None) or {}
    expected = tuple(spec["input_shape"]) if "input_shape" in spec else None
    shape = tuple(x.shape)
    if expected is not None and shape[1:] != expected:
        raise ModelDataMismatch(f"the model takes inputs of shape {expected} (per sample), but "
                                f"{what} has samples of shape {shape[1:]}.{_shape_hint(shape, expected)}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(x)
    except Exception as err:  # the model's own error: shape, dtype, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ModelDataMismatch(f"the model cannot take {what}: a batch of shape {shape} raised "
                                f"{type(err).__name__}: {first}.{_shape_hint(shape, expected)}") from None
    finally:
        model.train(was_training)
    from advlab.models.user import unwrap_logits

    logits = unwrap_logits(output)
    if logits.dim() != 2 or logits.shape[0] != shape[0]:
        raise ModelDataMismatch(f"the model returned shape {tuple(logits.shape)} for a batch of "
                                f"{shape[0]}; advlab needs logits (batch, classes)")
    if not torch.isfinite(logits).all():
        raise ModelDataMismatch(f"the model's output on {what} contains NaN or inf")
    classes, top = logits.shape[1], int(y.max()) if y.numel() else -1
    if top >= classes:
        raise ModelDataMismatch(f"{what} has labels up to {top} ({top + 1} classes) but the model "
                                f"outputs {classes} classes: use data with labels 0..{classes - 1} "
                                "or a model with more outputs")
    if classes > 1 and looks_like_probabilities(logits):
        raise ModelDataMismatch("the model returns probabilities (rows in [0, 1] summing to 1), "
                                "which hide the gradients attacks follow; advlab needs logits: "
                                "drop the final softmax (return the scores before it)")
    return logits
