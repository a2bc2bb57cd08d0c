"""``advlab reproduce NAME``: one command per result of the seed material.

Each :class:`Reproduction` names the published claim, the source, its runtime at the defaults
as measured once on a busy shared 2-core machine (one run after another, the first to need a
pair of models trains it; the models are cached in ``<out>/../models`` and reused) and the function that measures it (:mod:`advlab.experiments.reproduce_geometry`,
:mod:`advlab.experiments.reproduce_training`, :mod:`advlab.experiments.reproduce_capacity`). :func:`reproduce` runs one and writes
``<out>/<name>.json`` with the claim, the measured value, its 95 % interval and n.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advlab._utils import atomic_write_json
from advlab.experiments import reproduce_capacity as cap
from advlab.experiments import reproduce_geometry as geo
from advlab.experiments import reproduce_training as tr

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reproduction:
    name: str
    claim: str
    source: str
    runtime: str
    run: Callable[..., dict[str, Any]]


REPRODUCTIONS = {r.name: r for r in (
    Reproduction("goodfellow-fgsm-training",
                 "FGSM adversarial training (FGSM-mix) cuts the FGSM error sharply "
                 "(MNIST maxout, eps 0.25: 89.4 % -> 17.9 %)",
                 "Goodfellow, Shlens & Szegedy 2015; slides 002", "4.6 min (trains 2 Fashion-MNIST models)",
                 tr.goodfellow_fgsm_training),
    Reproduction("fawzi-boundaries",
                 "the boundary is far more curved along adversarial than along random directions",
                 "Fawzi, Moosavi-Dezfooli, Frossard & Soatto 2018; talk 001", "6.4 min (trains 2 digits models)",
                 geo.fawzi_boundaries),
    Reproduction("fawzi-landscape",
                 "adversarial training flattens the loss in input space (smaller curvature)",
                 "Moosavi-Dezfooli et al. 2019; talk 001", "6.6 min (digits, cached)", geo.fawzi_landscape),
    Reproduction("curvature-profile",
                 "eigenvalue profile: the adversarially trained network has much smaller eigenvalues",
                 "Fawzi et al.; talk 001, slide 'Eigenvalue profile Original vs Adversarial'",
                 "3.0 min (digits, cached)", geo.curvature_profile),
    Reproduction("cure-bounds",
                 "the quadratic-model bounds bracket the minimal perturbation: lower <= r* <= upper",
                 "Moosavi-Dezfooli, Fawzi, Uesato & Frossard 2019", "3.5 min (digits, cached)", geo.cure_bounds),
    Reproduction("deepfool-rho",
                 "DeepFool's rho_adv = E ||r*|| / ||x|| is small (LeNet on MNIST: 0.2)",
                 "Moosavi-Dezfooli, Fawzi & Frossard 2016", "1.5 min (digits, cached)", geo.deepfool_rho),
    Reproduction("noise-ratio",
                 "random noise needs a perturbation about sqrt(d) times the adversarial one",
                 "Fawzi, Moosavi-Dezfooli & Frossard 2016", "2.9 min (digits, cached)", geo.noise_ratio),
    Reproduction("random-relu",
                 "one gradient step flips the sign of a wide random ReLU network w.h.p.",
                 "Bubeck et al. 2021; Bartlett, Bubeck & Cherapanamjeri 2021; page 004", "3.0 min",
                 tr.random_relu),
    Reproduction("spirals",
                 "an over-parametrised MLP fits noisy labels with islands (train >> test), a small one stays smooth",
                 "lecture 000", "22.7 min (load 10-15; see docs)", tr.spirals),
    Reproduction("perceptual-gradients",
                 "robust models have perceptually aligned input gradients",
                 "Ortiz-Jimenez et al.'s review (page 003); Tsipras et al. 2019", "1.1 min (digits, cached)",
                 tr.perceptual_gradients),
    Reproduction("capacity",
                 "adversarial training needs more model capacity: robustness grows with width",
                 "Goodfellow's slides ('you need more model capacity'); Madry et al. 2018",
                 "CPU-hours (48 cells); --quick 30 s", cap.capacity),
)}


def reproduce(name: str, out: str | Path, *, cache: str | Path | None = None, seed: int = 0,
              quick: bool = False) -> dict[str, Any]:
    """Run the reproduction ``name`` into ``out``; returns (and writes) its result dict."""
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; choose one of {', '.join(REPRODUCTIONS)} "
                         "(advlab reproduce --list)")
    entry = REPRODUCTIONS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else out.parent / "models"
    started = time.perf_counter()
    result = entry.run(out, cache=cache, seed=seed, quick=quick)
    result = {"name": name, "claim": entry.claim, "source": entry.source, "seed": seed, "quick": quick,
              "time_s": time.perf_counter() - started, **result}
    atomic_write_json(out / f"{name}.json", result)
    return result
