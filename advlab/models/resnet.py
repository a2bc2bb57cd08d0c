"""Pre-activation ResNet-18 (He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual
Networks") in the CIFAR variant used by Madry et al. 2018 and Wong et al. 2020: a 3x3 stem
without max-pooling, four stages of two pre-activation blocks (64, 128, 256, 512 channels
times ``width / 64``), a final BN-ReLU and global average pooling, so any image size works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from advlab.models.registry import register_model


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the identity (or a strided 1x1 conv projection)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H / s, W / s)
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet: (B, C, H, W) -> (B, num_classes)."""

    def __init__(self, blocks: Sequence[int], num_classes: int, in_channels: int = 3,
                 width: int = 64) -> None:
        super().__init__()
        self.stem = _conv3x3(in_channels, width)
        stages: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(blocks):
            out_channels = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(PreActBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))  # (B, 8 * width, H / 8, W / 8)
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 8 * width)
        return self.linear(out)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, input_shape: tuple[int, ...], *, width: int = 64) -> nn.Module:
    """PreAct ResNet-18 for CIFAR-sized images; ``width`` scales every stage (64 = standard)."""
    if len(input_shape) != 3:
        raise ValueError(f"preact_resnet18 needs image inputs (C, H, W), got {input_shape}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"preact_resnet18: width must be a positive int, got {width!r}")
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels=input_shape[0], width=width)
