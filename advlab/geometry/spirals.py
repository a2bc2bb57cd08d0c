"""Small versus over-parametrised MLPs on two spirals: decision regions and weight landscapes.

A lecture-sized illustration of the geometry chapter: a small and an over-parametrised MLP are
trained on the classic two-spirals problem (Lang & Witbrock 1988); the figures compare their
decision regions and the shape of their minima along filter-normalised directions (Li et al.
2018; filter normalisation makes the curves of networks of different sizes comparable). With the
defaults the small MLP underfits (about 65% accuracy) and the wide one fits (about 99%). Plain
PyTorch training loop (full-batch Adam), seeded from ``generator``; CPU-sized (seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab.geometry.boundary import decision_regions_2d
from advlab.geometry.landscape import plot_loss_curves, weight_landscape_1d


def train_mlp(x: Tensor, y: Tensor, widths: Sequence[int], *, epochs: int = 500, lr: float = 1e-2,
              generator: torch.Generator | None = None) -> nn.Module:
    """A registry ``mlp`` on 2-D inputs trained full-batch with Adam on cross-entropy (eval mode)."""
    from advlab.models import create_model

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    model = create_model("mlp", num_classes=int(y.max()) + 1, input_shape=(x.shape[1],),
                         widths=tuple(int(w) for w in widths), seed=seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def spirals_experiment(out_dir: str | Path, *, small_widths: Sequence[int] = (16,),
                       large_widths: Sequence[int] = (256, 256), n_samples: int = 600,
                       noise: float = 0.01, epochs: int = 500, alphas: Sequence[float] | None = None,
                       generator: torch.Generator | None = None) -> dict[str, Any]:
    """Train a small and a large MLP on ``spirals`` and draw their regions and 1-D landscapes.

    Writes ``regions_small.png``, ``regions_large.png`` and ``landscape.png`` (both models'
    training loss along one filter-normalised direction each) into ``out_dir``.

    Returns:
        dict with ``train_accuracy`` / ``test_accuracy`` (``{"small": float, "large": float}``),
        ``parameters`` (counts), ``curves`` (the two :func:`weight_landscape_1d` results) and
        ``paths`` (the PNG files).
    """
    from advlab.data import load_dataset

    out_dir = Path(out_dir)
    train = load_dataset("spirals", split="train", n_samples=n_samples, noise=noise)
    test = load_dataset("spirals", split="test", n_samples=n_samples, noise=noise)
    axis = torch.linspace(-1.0, 1.0, 41) if alphas is None else torch.as_tensor(alphas)
    result: dict[str, Any] = {"train_accuracy": {}, "test_accuracy": {}, "parameters": {},
                              "curves": {}, "paths": {}}
    for name, widths in (("small", small_widths), ("large", large_widths)):
        model = train_mlp(train.x, train.y, widths, epochs=epochs, generator=generator)
        result["train_accuracy"][name] = _accuracy(model, train.x, train.y)
        result["test_accuracy"][name] = _accuracy(model, test.x, test.y)
        result["parameters"][name] = sum(p.numel() for p in model.parameters())
        result["curves"][name] = weight_landscape_1d(model, train.x, train.y, axis, generator=generator)
        label = "-".join(str(w) for w in widths)
        result["paths"][f"regions_{name}"] = decision_regions_2d(
            model, train.x, train.y, out_dir / f"regions_{name}.png",
            title=f"MLP {label} ({result['parameters'][name]} parameters): "
                  f"test accuracy {result['test_accuracy'][name]:.2f}")
    labels = [f"{name} MLP ({result['parameters'][name]} parameters)" for name in ("small", "large")]
    result["paths"]["landscape"] = plot_loss_curves(
        [result["curves"]["small"], result["curves"]["large"]], labels, out_dir / "landscape.png",
        title="Training loss along a filter-normalised direction", log_scale=True)
    return result
