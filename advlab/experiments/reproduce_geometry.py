"""Reproductions of the geometry results of the seed material (Fawzi et al., CURE, DeepFool).

Each function takes the output folder, the model cache, a seed and ``quick`` and returns a
result dict: ``claim`` (the published result, paraphrased), ``measured`` (one line with n and a
95 % interval), ``value``, ``ci``, ``n``, ``agrees`` (``True``/``False``/``None`` when the
interval cannot decide), ``details``, ``figures`` and ``captions`` (PNG names in ``out``).
Points are test points the models were not trained on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from advlab.attacks._core import model_guard, predict
from advlab.experiments.reproduce_models import DIGITS, model_pair, test_split
from advlab.geometry import compare_measures as measures
from advlab.geometry.compare import compare
from advlab.geometry.profile_plots import linear_noise_reference, plot_profile_bands
from advlab.geometry.scale import scale_hessian_eigs
from advlab.geometry.stats import (
    bootstrap_median,
    difference_interval,
    median,
    paired_ratio,
    proportion_interval,
)
from advlab.threat import flat

Result = dict[str, Any]


def _correct_points(models: dict[str, Any], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test points that every model classifies correctly (drawn from a seeded pool)."""
    x, y = test_split(DIGITS, min(360, 3 * n), seed=seed)
    keep = torch.ones(len(x), dtype=torch.bool)
    for model in models.values():
        with model_guard(model):
            keep &= predict(model, x).argmax(1) == y
    return x[keep][:n], y[keep][:n]


def _interval_line(value: float, ci: tuple[float, float], n: int) -> str:
    return f"{value:.3g} [95 % CI {ci[0]:.3g}, {ci[1]:.3g}], n = {n}"


def _agrees(ci: tuple[float, float], *, above: float | None = None, below: float | None = None) -> bool | None:
    """True if the whole interval is on the claimed side, False if wholly on the other, else None."""
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if above is not None:
        return True if lo > above else (False if hi < above else None)
    assert below is not None
    return True if hi < below else (False if lo > below else None)


def fawzi_boundaries(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """Curvature along the adversarial direction vs random directions (Fawzi et al. 2018)."""
    models = model_pair(cache)
    n = 40 if quick else 100
    x, y = _correct_points(models, n, seed)
    generator = torch.Generator().manual_seed(seed)
    model = models["standard"]
    info = measures.deepfool_info(model, x, y)
    ratio = measures.curvature_ratio(model, x, y, info.x_adv - x, h=0.5, generator=generator)
    finite = ratio[torch.isfinite(ratio)]
    ci = bootstrap_median(finite, generator=generator)
    second = torch.randn(x.shape, generator=generator)
    norms = torch.where(info.success, info.norm, torch.full_like(info.norm, math.nan)).double()
    kappa = measures.boundary_curvatures(model, x, info.x_adv - x, norms, second, resolution=31)
    kappa_ci = bootstrap_median(kappa[torch.isfinite(kappa)], generator=generator)
    return {"value": median(finite), "ci": list(ci), "n": int(finite.numel()),
            "measured": f"u^T H_h u / v^T H_h v (DeepFool vs random direction, h = 0.5): "
                        f"{_interval_line(median(finite), ci, int(finite.numel()))}; boundary |κ|·r in "
                        f"the DeepFool plane {median(kappa):.3g} [{kappa_ci[0]:.3g}, {kappa_ci[1]:.3g}]",
            "agrees": _agrees(ci, above=1.0),
            "details": {"boundary_curvature_median": median(kappa), "boundary_curvature_ci": list(kappa_ci)},
            "figures": {}, "captions": {}}


def fawzi_landscape(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """Adversarial training flattens the loss in input space: paired ratios robust / standard."""
    models = model_pair(cache)
    n = 50 if quick else 100
    x, y = _correct_points(models, n, seed)
    (first_label, first), (second_label, second) = models.items()
    labels = (first_label, second_label)
    result = compare(first, second, x, y, labels=labels, generator=torch.Generator().manual_seed(seed),
                     quantities=("top_eigenvalue", "top_eigenvalue_pointwise", "hessian_frobenius",
                                 "minimal_l2"), steps=15)
    row = result.rows["top_eigenvalue"]
    return {"value": row["ratio"], "ci": row["ci"], "n": row["n"],
            "measured": f"top eigenvalue at scale h, {labels[1]} / {labels[0]}: "
                        f"{_interval_line(row['ratio'], tuple(row['ci']), row['n'])} ({row['verdict']})",
            "agrees": _agrees(tuple(row["ci"]), below=1.0), "details": {"rows": result.rows},
            "figures": {}, "captions": {}}


def curvature_profile(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """Fawzi's eigenvalue profile at scale h, standard vs adversarially trained."""
    models = model_pair(cache)
    n = 20 if quick else 60
    x, y = _correct_points(models, n, seed)
    k = min(flat(x).shape[1], 20 if quick else 40)
    generator = torch.Generator().manual_seed(seed)
    profiles = {label: {"scale": scale_hessian_eigs(m, x, y, k, h=0.5, steps=k + 10, generator=generator)}
                for label, m in models.items()}
    path = plot_profile_bands(profiles, out / "curvature_profile.png", h=0.5,
                              title="Eigenvalue profile at scale h, standard vs adversarial")
    a, b = (p["scale"][:, 0] for p in profiles.values())
    row = paired_ratio(a, b, generator=generator)
    return {"value": row.ratio, "ci": list(row.ci), "n": row.n,
            "measured": f"top eigenvalue at scale h, robust / standard: {_interval_line(row.ratio, row.ci, row.n)}",
            "agrees": _agrees(row.ci, below=1.0),
            "details": {label: {"median_profile": torch.quantile(p["scale"].double(), 0.5, dim=0).tolist()}
                        for label, p in profiles.items()},
            "figures": {"curvature_profile": path.name},
            "captions": {"curvature_profile": f"Top {k} eigenvalues of the curvature at scale h = 0.5 "
                                              f"per point, median and 10-90 % band over n = {len(x)} test points."}}


#: The curvatures CURE's bounds are computed from, with what each one is.
CURE_VARIANTS = (
    ("pointwise ce", {"curvature": "pointwise", "loss": "ce"},
     "cross-entropy, flip at log 2, pointwise input Hessian: the paper's bounds"),
    ("scale-h ce", {"curvature": "scale", "h": 0.5, "loss": "ce"},
     "cross-entropy, flip at log 2, curvature at scale h = 0.5"),
    ("scale-h margin", {"curvature": "scale", "h": 0.5, "loss": "cw"},
     "margin loss, flip at 0, curvature at scale h = 0.5"),
)


def _bracket_fractions(bounds: dict[str, torch.Tensor], r: torch.Tensor, ok: torch.Tensor) -> dict[str, Any]:
    """Fractions of the points ``ok`` where lower <= r* <= upper and where each side fails."""
    lower, upper = bounds["lower"].double(), bounds["upper"].double()
    bracket = (lower <= r) & (r <= upper)
    count, hits = int(ok.sum()), int((bracket & ok).sum())
    below = int(((lower > r) & ok).sum())
    return {"fraction_bracketed": hits / max(count, 1), "ci": list(proportion_interval(hits, count)), "n": count,
            "fraction_lower_above_r": below / max(count, 1),
            "lower_above_r_ci": list(proportion_interval(below, count)),
            "fraction_r_above_upper": float((r > upper)[ok].double().mean()) if count else math.nan,
            "median_lower": median(lower[ok]), "median_upper": median(upper[ok]), "median_r": median(r[ok])}


def _cure_verdict(details: dict[str, Any]) -> tuple[str, bool | None]:
    """Which bound brackets r* on most points (interval above 1/2) and which does not."""
    said, verdicts = [], []
    for variant, _, _ in CURE_VARIANTS:
        for label, models in details.items():
            d = models[variant]
            verdict = _agrees(tuple(d["ci"]), above=0.5)
            verdicts.append(verdict)
            word = {True: "brackets r*", False: "does not bracket r*", None: "undecided"}[verdict]
            lower = _agrees(tuple(d["lower_above_r_ci"]), below=0.05)
            if verdict is not True and lower is True:
                word += " (its lower bound alone holds on >= 95 %)"
            said.append(f"{variant} {label}: {word}")
    overall = True if all(v is True for v in verdicts) else (False if any(v is False for v in verdicts) else None)
    return "; ".join(said), overall


def cure_bounds(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """CURE's quadratic-model bounds against DeepFool's r* per model, for each of
    :data:`CURE_VARIANTS` (pointwise vs scale-h curvature, cross-entropy vs margin loss).

    ``value``/``ci`` are the bracketed fraction of the scale-h cross-entropy bounds on the
    standard model; ``agrees`` is True only if every variant brackets r* on most points, False
    if any interval lies below 1/2."""
    from advlab.geometry.curvature import curvature_bounds

    models = model_pair(cache)
    n = 50 if quick else 150
    x, y = _correct_points(models, n, seed)
    details: dict[str, Any] = {}
    for label, model in models.items():
        info = measures.deepfool_info(model, x, y)
        r = info.norm.double()
        details[label] = {}
        for variant, options, _ in CURE_VARIANTS:
            bounds = curvature_bounds(model, x, y, generator=torch.Generator().manual_seed(seed), **options)
            details[label][variant] = _bracket_fractions(bounds, r, info.success)
    verdict, overall = _cure_verdict(details)
    lines = []
    for variant, _, what in CURE_VARIANTS:
        for label, d in ((label, models_[variant]) for label, models_ in details.items()):
            lines.append(f"{variant} [{what}], {label}: lower <= r* <= upper on {d['fraction_bracketed']:.0%} "
                         f"[{d['ci'][0]:.0%}, {d['ci'][1]:.0%}] of n = {d['n']} (quadratic model breaks "
                         f"down: lower > r* on {d['fraction_lower_above_r']:.0%}, r* > upper on "
                         f"{d['fraction_r_above_upper']:.0%}; medians lower {d['median_lower']:.3g}, r* "
                         f"{d['median_r']:.3g}, upper {d['median_upper']:.3g})")
    first = details["standard"][CURE_VARIANTS[1][0]]
    return {"value": first["fraction_bracketed"], "ci": first["ci"], "n": first["n"],
            "measured": "; ".join(lines) + f". Verdicts: {verdict}",
            "agrees": overall, "details": {"variants": {v: what for v, _, what in CURE_VARIANTS}, **details},
            "figures": {}, "captions": {}}


def deepfool_rho(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """DeepFool's rho_adv = mean ||r*|| / ||x|| on test points (Moosavi-Dezfooli et al. 2016)."""
    models = model_pair(cache)
    x, y = test_split(DIGITS, 200 if quick else 500, seed=seed)
    details: dict[str, Any] = {}
    for label, model in models.items():
        info = measures.deepfool_info(model, x, y)
        rho = (info.norm / flat(x).norm(dim=1))[info.success & torch.isfinite(info.norm) & (info.norm > 0)]
        mean, ci = difference_interval(torch.zeros_like(rho), rho, generator=torch.Generator().manual_seed(seed))
        details[label] = {"rho_adv": mean, "ci": list(ci), "n": int(rho.numel())}
    s = details["standard"]
    return {"value": s["rho_adv"], "ci": s["ci"], "n": s["n"],
            "measured": "; ".join(f"{label}: rho_adv {_interval_line(d['rho_adv'], tuple(d['ci']), d['n'])}"
                                  for label, d in details.items()),
            "agrees": None, "details": details, "figures": {}, "captions": {}}


def noise_ratio(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """Random-noise vs adversarial flip distance, clipped and unclipped, vs the linear reference."""
    model = model_pair(cache)["standard"]
    n = 50 if quick else 150
    x, y = _correct_points({"standard": model}, n, seed)
    generator = torch.Generator().manual_seed(seed)
    info = measures.deepfool_info(model, x, y)
    adversarial = torch.where(info.success, info.norm, torch.full_like(info.norm, math.nan)).double()
    details: dict[str, Any] = {}
    for clip in (True, False):
        ratio = measures.noise_distances(model, x, y, directions=10, clip=clip, generator=generator) / adversarial
        ratio = ratio[torch.isfinite(ratio)]
        details["clipped" if clip else "unclipped"] = {"median": median(ratio), "n": int(ratio.numel()),
                                                       "ci": list(bootstrap_median(ratio, generator=generator))}
    reference = linear_noise_reference(flat(x).shape[1], directions=10, generator=generator)
    details["linear_reference"] = reference
    u = details["unclipped"]
    return {"value": u["median"], "ci": u["ci"], "n": u["n"],
            "measured": f"unclipped {_interval_line(u['median'], tuple(u['ci']), u['n'])}; clipped to [0, 1] "
                        f"{details['clipped']['median']:.3g} [{details['clipped']['ci'][0]:.3g}, "
                        f"{details['clipped']['ci'][1]:.3g}]; linear classifier {reference['median']:.3g} "
                        f"[10-90 %: {reference['low']:.3g}, {reference['high']:.3g}], sqrt(d) = "
                        f"{math.sqrt(flat(x).shape[1]):.3g} (the claim holds where the unclipped interval "
                        "meets the linear classifier's 10-90 % band)",
            "agrees": (u["ci"][1] >= reference["low"] and u["ci"][0] <= reference["high"]),
            "details": details, "figures": {}, "captions": {}}
