"""Certified next to empirical robust accuracy at the same radii (the sanity check of a certificate).

A certificate is a lower bound on robustness and an attack an upper bound, so at every radius
``certified accuracy <= empirical robust accuracy`` must hold (up to the ``alpha`` failure
probability of smoothing). :func:`compare_smoothing` certifies the smoothed classifier
(Cohen et al. 2019) and attacks it with L2 PGD on the Monte-Carlo soft smoothed classifier (the
expectation of the softmax over the noise, Salman et al. 2019's SmoothAdv objective), judging the
adversarial points with PREDICT (an abstention counts as an error). :func:`compare_ibp`
certifies the base model by IBP (Gowal et al. 2018) and evaluates it with
:func:`advlab.evaluation.evaluate` under Linf at the same radii.

    rows = compare_ibp(model, x, y, eps=[0.05, 0.1])
    rows[0]["certified"]["accuracy"] <= rows[0]["empirical"]["accuracy"]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advlab.certify.ibp import ibp_certify
from advlab.certify.smoothing import certified_accuracy_table, smooth_certify, smooth_predict
from advlab.stats import accuracy_with_interval

Progress = Callable[[str, int], None]


class SoftSmoothed(nn.Module):
    """``log E_d softmax(f(x + d))``, ``d ~ N(0, sigma^2 I)``, estimated with ``samples`` draws
    from ``generator``: the differentiable surrogate of the smoothed classifier that attacks use."""

    def __init__(self, model: nn.Module, sigma: float, samples: int = 16,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.model, self.sigma, self.samples, self.generator = model, sigma, samples, generator

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn((self.samples, *x.shape), generator=self.generator, device=x.device,
                            dtype=x.dtype)
        noisy = (x.unsqueeze(0) + self.sigma * noise).reshape(-1, *x.shape[1:])
        probs = self.model(noisy).softmax(dim=1).reshape(self.samples, len(x), -1).mean(dim=0)
        return probs.clamp_min(1e-12).log()


def _empirical(correct: Tensor, radius: float) -> dict[str, Any]:
    return accuracy_with_interval(int(correct.sum()), len(correct), radius=radius).to_dict()


def _broken(cert: Any, y: Tensor, attacked_prediction: Tensor, radius: float) -> int:
    """Points certified correct at ``radius`` whose attacked copy PREDICT assigns another class
    (an abstention is not a counterexample: it is the Monte-Carlo test declining to decide). A
    sound certificate has none, up to the ``alpha`` failure probability of both tests."""
    certified = (cert.prediction == y) & (cert.radius >= radius)
    other = (attacked_prediction != cert.prediction) & (attacked_prediction != -1)
    return int((certified & other).sum())


def compare_smoothing(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float,
                      radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), n0: int = 100,
                      n: int = 10_000, alpha: float = 0.001, batch_size: int = 1000,
                      empirical: bool = True, attack_steps: int = 10, eot_samples: int = 16,
                      predict_n: int = 1000, generator: torch.Generator | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Certified accuracy of the smoothed classifier per L2 radius, next to its empirical robust
    accuracy (L2 PGD on :class:`SoftSmoothed`, ``attack_steps`` steps of ``2.5 r / steps``,
    judged by PREDICT with ``predict_n`` draws); every figure with n and a 95 % interval, and per
    radius the points certified there but broken by the attack (``certified_but_broken``: PREDICT
    at the attacked point names a class other than the certified one; 0 for a sound certificate).

    ``x``: ``(B, ...)``; ``y``: ``(B,)``. Returns ``{"rows": [{"radius", "certified",
    "empirical", "certified_but_broken"}], "abstain", "clean_smoothed"}``.
    """
    from advlab.attacks import pgd
    from advlab.threat import ThreatModel

    cert = smooth_certify(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                          generator=generator)
    if progress:
        progress("certify", len(x))
    table = certified_accuracy_table(cert, y, list(radii))
    rows = []
    for row in table:
        entry: dict[str, Any] = {"radius": row.radius, "certified": row.to_dict(), "empirical": None,
                                 "certified_but_broken": None}
        if empirical:
            x_adv = x
            if row.radius > 0:
                soft = SoftSmoothed(model, sigma, eot_samples, generator).eval()
                x_adv = pgd(soft, x, y, ThreatModel("l2", row.radius), steps=attack_steps,
                            step_size=2.5 * row.radius / attack_steps, generator=generator)
            pred = smooth_predict(model, x_adv, sigma=sigma, n=predict_n, alpha=alpha,
                                  batch_size=batch_size, generator=generator)
            entry["empirical"] = _empirical(pred == y, row.radius)
            entry["certified_but_broken"] = _broken(cert, y, pred, row.radius)
            if progress:
                progress(f"attack r={row.radius:g}", len(x))
        rows.append(entry)
    abstain = (cert.prediction == -1).float().mean().item() if len(x) else math.nan
    return {"method": "smoothing", "sigma": sigma, "n": n, "n0": n0, "alpha": alpha,
            "points": len(x), "abstain": abstain, "rows": rows,
            "clean_smoothed": rows[0]["certified"] if rows else None}


def compare_ibp(model: nn.Module, x: Tensor, y: Tensor, *, eps: Sequence[float],
                empirical: bool = True, preset: str = "fast", seed: int = 0, batch_size: int = 500,
                bounds: tuple[float, float] = (0.0, 1.0), progress: Progress | None = None,
                store: Any = None, run_name: str | None = None) -> dict[str, Any]:
    """IBP-certified accuracy per Linf ``eps`` next to the robust accuracy of
    :func:`advlab.evaluation.evaluate` (``preset``) at the same ``eps``, with 95 % intervals;
    ``store``/``run_name`` record the evaluations as ``evaluate`` does. Also returns the points
    certified but broken by the attacks (must be 0: a sound certificate is never broken)."""
    from advlab.evaluation import evaluate
    from advlab.threat import ThreatModel

    radii = sorted({float(e) for e in eps})
    results = []
    if empirical:
        results = evaluate(model, x, y, ThreatModel("linf", max(radii), bounds), eps=radii,
                           attacks=preset, seed=seed, batch_size=batch_size, progress=progress,
                           store=store, run_name=run_name)
        results = results if isinstance(results, list) else [results]
    rows = []
    for index, radius in enumerate(radii):
        certified = ibp_certify(model, x, y, radius, bounds=bounds)
        entry: dict[str, Any] = {"radius": radius, "certified": _empirical(certified, radius),
                                 "empirical": None, "certified_but_broken": None}
        if results:
            robust = results[index].robust_correct.to(certified.device)
            entry["empirical"] = _empirical(robust, radius)
            entry["certified_but_broken"] = int((certified & ~robust).sum())
            entry["verdict"] = results[index].verdict
        rows.append(entry)
    return {"method": "ibp", "points": len(x), "preset": preset if empirical else None, "rows": rows}


__all__ = ["SoftSmoothed", "compare_ibp", "compare_smoothing"]
