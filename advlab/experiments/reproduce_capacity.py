"""``advlab reproduce capacity``: does model capacity buy robustness under adversarial training?

Goodfellow's slides advise "you need more model capacity" for adversarial training, and Madry
et al. 2018 found that robustness grows with capacity. The measurement is the capacity study of
:mod:`advlab.experiments.capacity`: per defense and budget, the paired difference in robust
accuracy of the widest and the narrowest ``small_cnn`` on the same held-out test points, with its
95 % interval. Same result dict as :mod:`advlab.experiments.reproduce_training`.

At the defaults this is the full study (Fashion-MNIST, x1 / x2 / x4 / resnet16, four defenses,
2 / 5 / 10 epochs: many CPU-hours); ``quick`` is the digits pipeline check (two tiny widths,
``fgsm-rs``, 3 epochs, 200 points). Cells are cached in ``<cache>/capacity[-quick][-s<seed>]``
with the benchmark's cell names, and reused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from advlab.experiments.capacity import (
    MODELS,
    CapacityConfig,
    capacity_differences,
    cell_key,
    defenses,
    frontier,
    run_study,
    width_keys,
)
from advlab.experiments.capacity_report import plot

Result = dict[str, Any]

_SUMMARY_KEYS = ("model", "defense", "epochs", "clean_acc", "clean_ci", "robust_acc", "robust_ci",
                 "n_test", "preset", "train_cpu_s", "train_wall_s", "threads", "load_before",
                 "load_after", "best_epoch")


def _study(cache: Path, *, seed: int, quick: bool) -> tuple[CapacityConfig, dict[str, Any]]:
    """The study's config and grid: the full benchmark defaults, or the digits check."""
    folder = cache / ("capacity" + ("-quick" if quick else "") + (f"-s{seed}" if seed else ""))
    if quick:
        config = CapacityConfig(cache=folder, dataset="digits", lr=1e-2, adv_val_n=100, preset="fast",
                                seed=seed, quick=True)
        return config, {"model_keys": ["x1", "x2"], "defense_names": ["fgsm-rs"], "epochs": [3],
                        "n_test": 200}
    config = CapacityConfig(cache=folder, seed=seed)
    return config, {"model_keys": list(MODELS), "defense_names": list(defenses(config.eps)),
                    "epochs": [2, 5, 10], "n_test": 1000}


def _pooled(cells: list[dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[float, float, float, int]:
    """Mean over rows of the widest - narrowest difference, per test point; 95 % paired interval.

    Each test point contributes the average of its (defense, budget) differences, so the n points
    stay independent however many rows there are.
    """
    index = {cell_key(c): c["robust_correct"] for c in cells}
    per_point = [0.0] * rows[0]["n"]
    for row in rows:
        wide = index[(row["wide"], row["defense"], row["epochs"], row["variant"])]
        narrow = index[(row["narrow"], row["defense"], row["epochs"], row["variant"])]
        for i, (w, v) in enumerate(zip(wide, narrow, strict=True)):
            per_point[i] += (int(w) - int(v)) / len(rows)
    n = len(per_point)
    mean = sum(per_point) / n
    half = 1.96 * math.sqrt(sum((d - mean) ** 2 for d in per_point) / max(n - 1, 1) / n)
    return mean, mean - half, mean + half, n


def _verdict(lo: float, hi: float, rows: list[dict[str, Any]]) -> bool | None:
    """True when the pooled interval lies above 0 and no row disagrees; False the reverse."""
    verdicts = {row["verdict"] for row in rows}
    if lo > 0 and "disagrees" not in verdicts:
        return True
    if hi < 0 and "agrees" not in verdicts:
        return False
    return None


def capacity(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """Robust accuracy of the widest vs the narrowest small_cnn, paired, per defense and budget."""
    config, grid = _study(cache, seed=seed, quick=quick)
    cells = run_study(config, **grid)
    rows = capacity_differences(cells)
    if not rows:
        raise ValueError(f"the capacity study needs two small_cnn widths; got {width_keys(cells)}")
    mean, lo, hi, n = _pooled(cells, rows)
    parts = [f"{r['defense']} {r['epochs']} ep {r['wide']} - {r['narrow']} {r['difference']:+.1%} [{r['ci'][0]:+.1%}, {r['ci'][1]:+.1%}] "
             f"({r['verdict']})" for r in rows]
    figure = plot(cells, out / "frontier.png")
    front = [f"{c['model']} {c['defense']} {c['epochs']} ep" for c in frontier(cells)]
    return {"value": mean, "ci": [lo, hi], "n": n,
            "measured": f"robust accuracy, widest - narrowest small_cnn ({config.dataset}, Linf {config.eps}, "
                        f"{config.preset}), paired: " + "; ".join(parts)
                        + f"; mean over the {len(rows)} defense x budget pairs {mean:+.1%} "
                        f"[95 % CI {lo:+.1%}, {hi:+.1%}], n = {n}",
            "agrees": _verdict(lo, hi, rows),
            "details": {"differences": rows, "frontier": front, "cache": str(config.cache),
                        "cells": [{k: c[k] for k in _SUMMARY_KEYS} for c in cells]},
            "figures": {"frontier": figure.name},
            "captions": {"frontier": (
                f"Robust accuracy ({config.preset}, n = {n}, 95 % Clopper-Pearson bars) against "
                "training CPU-minutes on a shared machine, one colour per defense, one marker per "
                "model; the step line is the Pareto frontier.")}}
