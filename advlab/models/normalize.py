"""Input normalisation as the first layer of a model, so every model takes inputs in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of (N, C, H, W) inputs or per feature of (N, D) inputs.

    ``mean`` and ``std`` have one entry per channel (or feature), or a single entry applied to
    all. They are buffers, so they move with ``.to(device)`` and are saved with the weights.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ValueError(
                f"Normalize needs mean and std of the same non-zero length, got "
                f"{mean_t.numel()} and {std_t.numel()}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise ValueError(f"Normalize needs finite mean and std > 0, got {mean} and {std}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        channels = self.mean.numel()
        if x.dim() < 2 or (channels > 1 and x.shape[1] != channels):
            raise ValueError(
                f"Normalize with {channels} channels got input of shape {tuple(x.shape)}; "
                "expected (N, C, ...) with C matching mean/std"
            )
        view = (1, -1) + (1,) * (x.dim() - 2)  # (1, C, 1, 1) for images, (1, D) for vectors
        return (x - self.mean.view(view)) / self.std.view(view)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"
