"""The two lecture experiments of the geometry chapter, with their files: random ReLU networks
and small versus over-parametrised MLPs on two spirals.

* :func:`random_relu_sweep`: the one-gradient-step experiment of Bubeck, Cherapanamjeri, Gidel &
  Tachet des Combes (2021) and Bartlett, Bubeck & Cherapanamjeri (2021) over a grid of input
  dimensions, widths (one with a bottleneck) and depths
  (:func:`~advlab.geometry.random_relu.random_relu_experiment`), with a plot,
  ``random_relu.json`` and plain-language verdicts on the claims
  (:func:`~advlab.geometry.random_relu.summarise_claims`).
* :func:`spirals_compare`: a small and an over-parametrised MLP trained on two spirals (Lang &
  Witbrock 1988), optionally with flipped training labels; their decision regions with the
  training points and their filter-normalised weight-space landscapes in 1-D and 2-D (Li et al.
  2018), with ``spirals.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from advlab._utils import atomic_write_json
from advlab.geometry.boundary import decision_regions_2d
from advlab.geometry.landscape import (
    filter_normalized_direction,
    plot_loss_curves,
    plot_loss_surface,
    weight_landscape_1d,
    weight_landscape_2d,
)
from advlab.geometry.random_relu import plot_random_relu, random_relu_experiment, summarise_claims
from advlab.geometry.spirals import _accuracy, train_mlp

INPUT_DIMS = (10, 100, 1000)
QUICK_INPUT_DIMS = (10, 100)
#: Hidden-width blocks: narrow, wide, and wide with a bottleneck of width 10.
WIDTHS = ((100,), (1000,), (1000, 10, 1000))
#: Each block is repeated this many times.
DEPTHS = (1, 2, 4)


def random_relu_sweep(out_dir: str | Path, *, quick: bool = False,
                      input_dims: Sequence[int] | None = None,
                      widths: Sequence[Sequence[int]] = WIDTHS, depths: Sequence[int] = DEPTHS,
                      samples: int | None = None, tau: float = 0.5,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
    """Run the random-ReLU sweep, write ``random_relu.png`` and ``random_relu.json``.

    Args:
        out_dir: output folder.
        quick: the small grid (``d`` in :data:`QUICK_INPUT_DIMS`, 50 inputs per network)
            instead of :data:`INPUT_DIMS` with 200 inputs.
        input_dims, samples: override the grid's input dimensions / inputs per network.
        widths, depths: hidden-width blocks and how often each is repeated.
        tau: overshoot of the gradient step (the flip needs a linearity error below ``tau``).
        generator: draws the networks and the inputs.

    Returns:
        dict: ``params``, ``rows`` (one per configuration, see ``random_relu_experiment``),
        ``claims`` (verdict lines), ``figures`` / ``captions``.
    """
    out_dir = Path(out_dir)
    dims = tuple(input_dims) if input_dims is not None else (QUICK_INPUT_DIMS if quick else INPUT_DIMS)
    count = samples if samples is not None else (50 if quick else 200)
    rows = random_relu_experiment(dims, widths, depths, samples=count, tau=tau, generator=generator)
    path = plot_random_relu(rows, out_dir / "random_relu.png",
                            title="One gradient step on random ReLU networks")
    result = {
        "params": {"input_dims": list(dims), "widths": [list(w) for w in widths],
                   "depths": list(depths), "samples": count, "tau": tau, "quick": quick},
        "rows": rows,
        "claims": summarise_claims(rows),
        "figures": {"random_relu": path.name},
        "captions": {"random_relu": (
            "Random bias-free ReLU networks with Gaussian weights, inputs on the sphere of radius "
            "√d: flip rate of the single gradient step δ = -(1+τ) f(x) ∇f / ‖∇f‖² (left), its "
            "length ‖δ‖/‖x‖·√d with the 10-90% band (middle, the claim: O(1)), and how far f is "
            "from linear along the step (right), per width/depth configuration.")},
    }
    atomic_write_json(out_dir / "random_relu.json", result)
    return result


def _spirals_model(name: str, widths: Sequence[int], train: Any, test: Any, out_dir: Path, *,
                   epochs: int, generator: torch.Generator | None) -> dict[str, Any]:
    """Train one MLP and draw its decision regions and 2-D weight landscape."""
    model = train_mlp(train.x, train.y, widths, epochs=epochs, generator=generator)
    parameters = sum(p.numel() for p in model.parameters())
    test_accuracy = _accuracy(model, test.x, test.y)
    shape = "-".join(str(w) for w in widths)
    regions = decision_regions_2d(model, train.x, train.y, out_dir / f"regions_{name}.png",
                                  title=f"MLP {shape} ({parameters} parameters): test accuracy "
                                        f"{test_accuracy:.2f}")
    directions = (filter_normalized_direction(model, generator), filter_normalized_direction(model, generator))
    line = weight_landscape_1d(model, train.x, train.y, torch.linspace(-1.0, 1.0, 41), direction=directions[0])
    grid = torch.linspace(-1.0, 1.0, 21)
    surface = weight_landscape_2d(model, train.x, train.y, grid, grid, directions=directions)
    landscape = plot_loss_surface(surface, out_dir / f"landscape_2d_{name}.png",
                                  title=f"MLP {shape}: training loss around the solution",
                                  xlabel="α along filter-normalised direction 1",
                                  ylabel="β along filter-normalised direction 2")
    return {"widths": list(widths), "parameters": parameters,
            "train_accuracy": _accuracy(model, train.x, train.y), "test_accuracy": test_accuracy,
            "curve": line, "surface": surface, "paths": {"regions": regions, "landscape_2d": landscape}}


def spirals_compare(out_dir: str | Path, *, label_noise: float = 0.0,
                    small_widths: Sequence[int] = (16,), large_widths: Sequence[int] = (256, 256),
                    n_samples: int = 600, noise: float = 0.01, epochs: int = 500, seed: int = 0,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
    """A small and an over-parametrised MLP on two spirals: regions and weight landscapes.

    ``label_noise`` flips that fraction of the training labels (the test split stays clean), so
    the regions show whether a model fits the noise. ``seed`` draws the data, ``generator`` the
    initialisations and landscape directions; ``epochs`` of full-batch Adam.

    Writes ``regions_{small,large}.png``, ``landscape_2d_{small,large}.png``,
    ``landscape_1d.png`` and ``spirals.json`` into ``out_dir``; returns the JSON's content:
    ``params``, per model (``small``, ``large``) ``widths``, ``parameters``, ``train_accuracy``
    (on the possibly noisy labels), ``test_accuracy`` and the 1-D curve, plus ``figures`` and
    ``captions``.
    """
    from advlab.data import load_dataset

    out_dir = Path(out_dir)
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
