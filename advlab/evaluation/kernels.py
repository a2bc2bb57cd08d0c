"""Faster kernels for the attacks, never for the decisions.

Only the model the attacks differentiate (``attack_model``) is accelerated: micro-batches (on by
default on CPU, see :func:`default_micro_batch`), the channels_last memory format (on by default
on CPU for models with a 2-d max-pool, see :func:`default_channels_last`), and the opt-in
``torch.compile`` and autocast (bf16 on CPU, fp16 or bf16 on CUDA). The clean pass
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

from advlab.attacks._core import CPU_CHUNK

logger = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


#: Points per forward/backward pass of the attack model on CPU: the forward passes' chunk
#: (:data:`advlab.attacks._core.CPU_CHUNK`); a small CNN's forward and backward on 512
#: Fashion-MNIST images took 0.53x the time in chunks of 64 than in one pass.
CPU_MICRO_BATCH = CPU_CHUNK


def default_micro_batch(device: torch.device | str) -> int | None:
    """The attack model's micro-batch on ``device``: :data:`CPU_MICRO_BATCH` on CPU, none on
    accelerators (whose kernels want the largest batch)."""
    return CPU_MICRO_BATCH if torch.device(device).type == "cpu" else None


def default_channels_last(model: nn.Module, device: torch.device | str) -> bool:
    """Whether the attacks run ``model`` in channels_last by default: on CPU when it has an
    ``nn.MaxPool2d``. PyTorch's CPU max-pool is far slower on NCHW than on NHWC tensors: on this
    2-core CPU a 2x2 pool of 64 x 64 x 24 x 24 activations took 10.3 ms against 0.7 ms, so
    ``small_cnn``'s forward on 64 Fashion-MNIST images took 0.41x the time in channels_last and
    its forward and backward 0.85x (``lenet``: 0.72x and 0.67x). Without a max-pool it does not
    pay (``preact_resnet18``: 0.97x and 1.08x), and on CUDA the kernels differ again."""
    return torch.device(device).type == "cpu" and any(isinstance(m, nn.MaxPool2d) for m in model.modules())


@dataclass(frozen=True)
class Kernels:
    """Which kernels the attacks use. ``micro_batch``: the attack model runs its forward (and so
    its backward) in chunks of at most this many points (None or 0: one pass)."""

    channels_last: bool = False
    compile: bool | str = False  # True, or a torch.compile backend name
    amp: str | None = None  # None, "bf16" or "fp16"
    micro_batch: int | None = None

    def __post_init__(self) -> None:
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if self.micro_batch is not None and (not isinstance(self.micro_batch, int) or self.micro_batch < 0):
            raise ValueError(f"micro_batch must be None or an int >= 0 (0: off), got {self.micro_batch!r}")

    def describe(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "compile": self.compile, "amp": self.amp,
                "micro_batch": self.micro_batch or None}

    @property
    def any(self) -> bool:
        return bool(self.channels_last or self.compile or self.amp or self.micro_batch)


class _Accelerated(nn.Module):
    """``model`` in micro-batches, with its inputs in channels_last and/or its forward under
    autocast; returns float32 logits ``(B, K)`` so the attacks' losses are computed in float32.
    Chunks are independent forwards concatenated, so autograd runs each chunk's backward on its
    own (same per-sample gradients, up to the rounding of another batch shape)."""

    def __init__(self, model: nn.Module, *, channels_last: bool, amp: str | None,
                 micro_batch: int | None = None) -> None:
        super().__init__()
        self.model, self.channels_last, self.amp = model, channels_last, amp
        self.micro_batch = micro_batch or None

    def forward(self, x: Tensor) -> Tensor:
        if self.micro_batch is not None and len(x) > self.micro_batch:
            return torch.cat([self._forward(chunk) for chunk in x.split(self.micro_batch)])
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
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
    wrapped: nn.Module = _Accelerated(model, channels_last=kernels.channels_last, amp=kernels.amp,
                                      micro_batch=kernels.micro_batch)
    if kernels.compile:
        backend = kernels.compile if isinstance(kernels.compile, str) else "inductor"
        wrapped = torch.compile(wrapped, backend=backend)
    logger.info("attacks use %s (verification stays float32 eager)", kernels.describe())
    return wrapped
