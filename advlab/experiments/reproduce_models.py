"""The trained models the reproductions share, trained once into a cache folder.

A pair is a standard model and an adversarially trained one of the same architecture on the
same data, trained by :func:`advlab.experiments.runs.train_run` (the same training run as
``advlab train``) into ``<cache>/<dataset>-<model>-<defense>-s<seed>`` and reloaded from there
on later calls. Defaults are sized for a laptop CPU: digits (1 797 8x8 images) trains in seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairSpec:
    """What to train: dataset, architecture, the robust model's defense and its options."""

    dataset: str = "digits"
    model: str = "small_cnn"
    defense: str = "pgd-at"
    defense_params: tuple[tuple[str, Any], ...] = (("eps", 0.1),)
    epochs: int = 10
    n_train: int | None = None
    seed: int = 0


DIGITS = PairSpec(defense="fgsm-rs")
FASHION = PairSpec(dataset="fashion-mnist", defense="fgsm-rs", epochs=1, n_train=10000)


def cached_run(cache: str | Path, spec: PairSpec, defense: str, params: dict[str, Any]) -> nn.Module:
    """The model of the run ``defense`` of ``spec`` from ``cache``, training it when absent."""
    from advlab.experiments.runs import train_run
    from advlab.models import load_model

    run_dir = Path(cache) / f"{spec.dataset}-{spec.model}-{defense}-s{spec.seed}"
    if (run_dir / "model.json").exists():
        return load_model(run_dir)
    logger.info("training %s into %s", defense, run_dir)
    run = train_run(run_dir, dataset=spec.dataset, model=spec.model, defense=defense,
                    defense_params=params, epochs=spec.epochs, n_train=spec.n_train, seed=spec.seed,
                    device="cpu", progress=False, adv_val=False)
    return run.result.model.eval()


def model_pair(cache: str | Path, spec: PairSpec = DIGITS) -> dict[str, nn.Module]:
    """``{"standard": model, "<defense>": robust_model}``, trained into ``cache`` if needed."""
    return {"standard": cached_run(cache, spec, "none", {}),
            spec.defense: cached_run(cache, spec, spec.defense, dict(spec.defense_params))}


def test_split(spec: PairSpec, n: int, *, seed: int = 0) -> tuple[Any, Any]:
    """``n`` seeded random test points ``(x, y)`` of ``spec.dataset`` (never trained on)."""
    import torch

    from advlab.data import load_dataset

    data = load_dataset(spec.dataset, "test")
    order = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(seed))[:n]
    return data.x[order], data.y[order]
