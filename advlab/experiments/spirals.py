"""Small versus over-parametrised MLPs on two spirals: decision regions and weight landscapes.

A lecture-sized illustration of the geometry chapter: a small and an over-parametrised MLP are
trained on the classic two-spirals problem (Lang & Witbrock 1988), optionally with flipped
training labels; the figures compare their decision regions with the training points and the
shape of their minima along filter-normalised directions in 1-D and 2-D (Li et al. 2018; filter
normalisation makes the curves of networks of different sizes comparable). Plain PyTorch
training loop (full-batch Adam), CPU-sized (seconds); the accuracies the defaults reach are in
the JSON a run writes (``advlab theory spirals``). :func:`spirals_compare` is the entry point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import atomic_write_json
from advlab.geometry.boundary import decision_regions_2d
from advlab.geometry.landscape import (
    filter_normalized_direction,
    plot_loss_curves,
    plot_loss_surface,
    weight_landscape_1d,
    weight_landscape_2d,
)

__all__ = ["accuracy", "spirals_compare", "train_mlp"]


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


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` ``(N, d)`` that ``model`` classifies as ``y`` ``(N,)``."""
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def _spirals_model(name: str, widths: Sequence[int], train: Any, test: Any, out_dir: Path, *,
                   epochs: int, generator: torch.Generator | None) -> dict[str, Any]:
    """Train one MLP and draw its decision regions and 2-D weight landscape."""
    model = train_mlp(train.x, train.y, widths, epochs=epochs, generator=generator)
    parameters = sum(p.numel() for p in model.parameters())
    test_accuracy = accuracy(model, test.x, test.y)
    shape = "-".join(str(w) for w in widths)
    regions = decision_regions_2d(model, train.x, train.y, out_dir / f"regions_{name}.png",
                                  title=f"MLP {shape} ({parameters} parameters): test accuracy "
                                        f"{test_accuracy:.2f}")
    directions = (filter_normalized_direction(model, generator=generator),
                  filter_normalized_direction(model, generator=generator))
    line = weight_landscape_1d(model, train.x, train.y, torch.linspace(-1.0, 1.0, 41), direction=directions[0])
    grid = torch.linspace(-1.0, 1.0, 21)
    surface = weight_landscape_2d(model, train.x, train.y, grid, grid, directions=directions)
    landscape = plot_loss_surface(surface, out_dir / f"landscape_2d_{name}.png",
                                  title=f"MLP {shape}: training loss around the solution",
                                  xlabel="α along filter-normalised direction 1",
                                  ylabel="β along filter-normalised direction 2")
    return {"widths": list(widths), "parameters": parameters,
            "train_accuracy": accuracy(model, train.x, train.y), "test_accuracy": test_accuracy,
            "curve": line, "surface": surface, "paths": {"regions": regions, "landscape_2d": landscape}}


#: Defaults that show what the lecture shows: with 20 % of 150 training labels flipped, the
#: large MLP (3 x 256) maps (nearly) every training point to its label, islands included, and
#: loses test accuracy (measured, seed 0: train 0.96, test 0.79), while the small one stays
#: smooth. Without label noise a large MLP fits and generalises (no overfitting to see).
SPIRALS_DEFAULTS = {"label_noise": 0.2, "n_samples": 150, "large_widths": (256, 256, 256), "epochs": 1000}


def spirals_compare(out_dir: str | Path, *, label_noise: float = 0.2,
                    small_widths: Sequence[int] = (16,), large_widths: Sequence[int] = (256, 256, 256),
                    n_samples: int = 150, noise: float = 0.01, epochs: int = 1000, seed: int = 0,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
    """A small and an over-parametrised MLP on two spirals: regions and weight landscapes.

    ``label_noise`` flips that fraction of the training labels (the test split stays clean), so
    the regions show whether a model fits the noise. ``seed`` draws the data, ``generator`` the
    initialisations and landscape directions (seeded from ``seed`` when ``None``); ``epochs``
    of full-batch Adam.

    Writes ``regions_{small,large}.png``, ``landscape_2d_{small,large}.png``,
    ``landscape_1d.png`` and ``spirals.json`` into ``out_dir``; returns the JSON's content:
    ``params``, per model (``small``, ``large``) ``widths``, ``parameters``, ``train_accuracy``
    (on the possibly noisy labels), ``test_accuracy`` and the 1-D curve, plus ``figures`` and
    ``captions``.
    """
    from advlab.data import load_dataset

    out_dir = Path(out_dir)
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    options: dict[str, Any] = {"seed": seed, "n_samples": n_samples, "noise": noise}
    train = load_dataset("spirals", "train", label_noise=label_noise, **options)
    test = load_dataset("spirals", "test", **options)
    models = {name: _spirals_model(name, widths, train, test, out_dir, epochs=epochs, generator=generator)
              for name, widths in (("small", small_widths), ("large", large_widths))}
    labels = [f"{name} MLP ({m['parameters']} parameters)" for name, m in models.items()]
    curves = plot_loss_curves([m["curve"] for m in models.values()], labels, out_dir / "landscape_1d.png",
                              title="Training loss along a filter-normalised direction", log_scale=True)
    noisy = f" ({label_noise:.0%} of the training labels flipped)" if label_noise else ""
    figures, captions = {"landscape_1d": curves.name}, {
        "landscape_1d": f"Training loss{noisy} of both MLPs at θ + αd for one random "
                        "filter-normalised direction d each (Li et al. 2018)."}
    for name, m in models.items():
        for kind, path in m.pop("paths").items():
            figures[f"{kind}_{name}"] = path.name
        captions[f"regions_{name}"] = (f"Decision regions of the {name} MLP ({m['parameters']} parameters) "
                                       f"with the training points{noisy}, coloured by their label.")
        captions[f"landscape_2d_{name}"] = (f"Training loss of the {name} MLP on the plane θ + αd₁ + βd₂ "
                                            "of two filter-normalised directions.")
    result = {"params": {"label_noise": label_noise, "n_samples": n_samples, "noise": noise,
                         "epochs": epochs, "seed": seed},
              **models, "figures": figures, "captions": captions}
    atomic_write_json(out_dir / "spirals.json", result)
    return result
