"""Opt-in faster kernels for the attacks, never for the decisions.

Only the model the attacks differentiate (``attack_model``) is accelerated: channels_last
memory format, ``torch.compile``, autocast (bf16 on CPU, fp16 or bf16 on CUDA). The clean pass
and the verification of every adversarial example (a fresh forward pass, inside the threat model)
stay on the unchanged float32 eager model, so an accelerated attack can only find fewer or other
adversarial examples; a point is never counted broken on the strength of a low-precision forward.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass(frozen=True)
class Kernels:
    """Which opt-in kernels the attacks use (all off by default)."""

    channels_last: bool = False
    compile: bool | str = False  # True, or a torch.compile backend name
    amp: str | None = None  # None, "bf16" or "fp16"

    def __post_init__(self) -> None:
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")

    def describe(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "compile": self.compile, "amp": self.amp}

    @property
    def any(self) -> bool:
        return bool(self.channels_last or self.compile or self.amp)


class _Accelerated(nn.Module):
    """``model`` with its inputs in channels_last and/or its forward under autocast; returns
    float32 logits ``(B, K)`` so the attacks' losses are computed in float32."""

    def __init__(self, model: nn.Module, *, channels_last: bool, amp: str | None) -> None:
        super().__init__()
        self.model, self.channels_last, self.amp = model, channels_last, amp

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is None:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=AMP_DTYPES[self.amp]):
            out = self.model(x)
        return out.float()


def accelerate(model: nn.Module, kernels: Kernels, *, example: Tensor | None = None) -> nn.Module:
    """The attack model with ``kernels`` applied (``model`` itself when none is on); the
    original model is left unchanged (channels_last works on a copy)."""
    if not kernels.any:
        return model
    if kernels.amp == "fp16" and example is not None and example.device.type == "cpu":
        raise ValueError("amp='fp16' needs a CUDA device; on CPU use amp='bf16'")
    if kernels.channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    wrapped: nn.Module = _Accelerated(model, channels_last=kernels.channels_last, amp=kernels.amp)
    if kernels.compile:
        backend = kernels.compile if isinstance(kernels.compile, str) else "inductor"
        wrapped = torch.compile(wrapped, backend=backend)
    logger.info("attacks use %s (verification stays float32 eager)", kernels.describe())
    return wrapped
