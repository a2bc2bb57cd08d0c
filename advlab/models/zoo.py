"""The small models of the zoo: ``mlp``, ``small_cnn``, ``lenet`` and ``random_relu``.

Every builder takes ``(num_classes, input_shape, **options)`` and computes its layer sizes from
``input_shape``, so the same name works on 28x28 MNIST, 8x8 digits and 3x32x32 CIFAR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from advlab.models.registry import register_model


def _widths(widths: Sequence[int], model: str) -> tuple[int, ...]:
    widths = tuple(widths)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"{model}: widths must be positive ints, got {widths!r}")
    return widths


def _image_shape(input_shape: tuple[int, ...], model: str, min_side: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ValueError(
            f"{model} needs image inputs (C, H, W) with H, W >= {min_side}, got {input_shape}; "
            "use 'mlp' for vector inputs"
        )
    return input_shape  # type: ignore[return-value]


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features ``features`` outputs for one input of ``input_shape``."""
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


def _mlp_layers(dims: Sequence[int], *, bias: bool = True) -> list[nn.Module]:
    """Flatten, then Linear-ReLU pairs through ``dims``, the last Linear without ReLU."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(fan_in, fan_out, bias=bias))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return layers


@register_model("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], *,
        widths: Sequence[int] = (256, 256)) -> nn.Module:
    """Fully connected ReLU network on the flattened input: (B, *input_shape) -> (B, num_classes)."""
    dims = (math.prod(input_shape), *_widths(widths, "mlp"), num_classes)
    return nn.Sequential(*_mlp_layers(dims))


@register_model("small_cnn")
def small_cnn(num_classes: int, input_shape: tuple[int, ...], *,
              channels: Sequence[int] = (32, 64), hidden: int = 128) -> nn.Module:
    """The usual MNIST-sized CNN: conv 3x3 (32) - ReLU - conv 3x3 (64) - ReLU - max-pool 2 -
    fc ``hidden`` - ReLU - fc ``num_classes``. Needs images of at least 6x6."""
    in_channels, _, _ = _image_shape(input_shape, "small_cnn", 6)
    first, second = _widths(channels, "small_cnn")
    features = nn.Sequential(
        nn.Conv2d(in_channels, first, 3), nn.ReLU(),
        nn.Conv2d(first, second, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(*features, nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@register_model("lenet")
def lenet(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """LeNet-5 style (LeCun et al. 1998) with ReLU and max-pooling: conv 5x5 (6, padded) - pool -
    conv 5x5 (16) - pool - fc 120 - fc 84 - fc ``num_classes``. On 28x28 the flattened size is
    the classic 16x5x5; on small images (8x8 digits) the second conv is padded as well."""
    in_channels, height, width = _image_shape(input_shape, "lenet", 4)
    second_padding = 0 if min(height, width) // 2 >= 6 else 2
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=second_padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        *features, nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@register_model("random_relu")
def random_relu(num_classes: int, input_shape: tuple[int, ...], *,
                widths: Sequence[int] = (100,), depth: int | None = None,
                bias: bool = False) -> nn.Module:
    """Random ReLU network with i.i.d. Gaussian weights N(0, 1/fan_in), as in Bubeck, Cherapanamjeri,
    Gidel, Tachet des Combes 2021 and Bartlett, Bubeck, Cherapanamjeri 2021: (B, *input_shape)
    -> (B, num_classes); ``num_classes=1`` gives a scalar-output network (B, 1).

    ``widths``: hidden widths, e.g. ``(100,)`` or a bottleneck ``(1000, 10, 1000)``;
    ``depth``: alternatively, ``depth`` hidden layers all of width ``widths[0]``;
    ``bias``: add biases, also N(0, 1/fan_in). Meant to be used untrained.
    """
    widths = _widths(widths, "random_relu")
    if depth is not None:
        if len(widths) != 1 or isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(
                f"random_relu: depth={depth!r} needs a single width, e.g. widths=(100,), depth=3"
            )
        widths = widths * depth
    dims = (math.prod(input_shape), *widths, num_classes)
    net = nn.Sequential(*_mlp_layers(dims, bias=bias))
    for layer in net:
        if isinstance(layer, nn.Linear):
            std = layer.in_features ** -0.5
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.normal_(layer.bias, std=std)
    return net
