"""Randomized smoothing: certified L2 robustness by Gaussian noise (Cohen, Rosenfeld & Kolter 2019).

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing" (ICML
2019): the smoothed classifier ``g(x) = argmax_c P(f(x + d) = c)``, ``d ~ N(0, sigma^2 I)``, is
constant within the L2 ball of radius ``sigma * Phi^-1(p_A)`` around ``x`` when the top class has
probability at least ``p_A > 1/2`` (their Theorem 1 with ``p_B = 1 - p_A``). ``smooth_predict``
is their PREDICT, ``smooth_certify`` their CERTIFY; both hold with probability ``1 - alpha``
over the noise draws.

    cert = smooth_certify(model, x, sigma=0.25, n=10_000, generator=torch.Generator().manual_seed(0))
    cert.prediction, cert.radius                # (B,) int64 (-1: abstain), (B,) float
    certified_accuracy_table(cert, y)           # rows at radii 0, 0.25, ..., with 95 % intervals

As in the paper the noise is added to ``x`` without clipping to the data bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advlab.attacks._core import check_inputs, check_logits, model_guard
from advlab.stats import (
    CertifiedAccuracy,
    accuracy_with_interval,
    binomial_test_half,
    clopper_pearson_lower,
    normal_ppf,
)

ABSTAIN = -1
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def _check_settings(sigma: float, alpha: float, **counts: int) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _num_classes(model: nn.Module, x: Tensor) -> int:
    """One clean forward pass on the first input: checks the logits (warns on probabilities)."""
    with torch.no_grad():
        logits = model(x[:1])
    check_logits(logits)
    return logits.shape[1]


def sample_counts(model: nn.Module, x: Tensor, *, sigma: float, num: int, num_classes: int,
                  batch_size: int = 1000, generator: torch.Generator | None = None) -> Tensor:
    """Class counts of ``model`` on ``num`` Gaussian draws ``x + N(0, sigma^2 I)`` per input.

    Draws for all inputs are streamed in chunks of ``batch_size`` rows, so memory is bounded by
    ``batch_size`` inputs whatever ``num``. Call with the model in eval mode.
    ``x``: ``(B, ...)``; returns ``(B, num_classes)`` int64 counts summing to ``num``.
    """
    counts = torch.zeros(len(x), num_classes, dtype=torch.int64, device=x.device)
    total = len(x) * num
    with torch.no_grad():
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total), device=x.device) // num
            noise = torch.randn((len(rows), *x.shape[1:]), generator=generator,
                                device=x.device, dtype=x.dtype)
            predicted = model(x[rows] + sigma * noise).argmax(dim=1)
            counts.index_put_((rows, predicted), torch.ones_like(predicted), accumulate=True)
    return counts


def smooth_predict(model: nn.Module, x: Tensor, *, sigma: float, n: int = 1000,
                   alpha: float = 0.001, batch_size: int = 1000,
                   bounds: tuple[float, float] = (0.0, 1.0),
                   generator: torch.Generator | None = None) -> Tensor:
    """PREDICT of Cohen et al. (2019, Sec. 3.2): the smoothed class, or abstain.

    Counts the base model's classes on ``n`` noise draws; returns the top class when the
    two-sided binomial test of its count against the runner-up's (``p = 1/2``) rejects at level
    ``alpha``, else ``-1``. A returned class differs from ``g(x)`` with probability <= ``alpha``.
    ``x``: ``(B, ...)`` in ``bounds``; returns ``(B,)`` int64.
    """
    _check_settings(sigma, alpha, n=n, batch_size=batch_size)
    check_inputs(x, bounds=bounds)
    with model_guard(model):
        x = x.detach()
        counts = sample_counts(model, x, sigma=sigma, num=n, num_classes=_num_classes(model, x),
                               batch_size=batch_size, generator=generator)
    top = counts.topk(min(2, counts.shape[1]), dim=1)
    prediction = top.indices[:, 0].clone()
    for i, row in enumerate(top.values.tolist()):
        n_a, n_b = row[0], (row[1] if len(row) > 1 else 0)
        if binomial_test_half(n_a, n_a + n_b) > alpha:
            prediction[i] = ABSTAIN
    return prediction


@dataclass
class SmoothingCertificate:
    """Result of :func:`smooth_certify` for a batch of ``B`` inputs and ``K`` classes.

    Attributes:
        prediction: ``(B,)`` int64, the certified class ``c_A`` or ``-1`` (abstain).
        radius: ``(B,)`` float, the certified L2 radius ``sigma * Phi^-1(p_lower)`` (0 on abstain).
        counts: ``(B, K)`` int64 class counts of the ``n`` estimation draws.
        p_lower: ``(B,)`` float, the one-sided Clopper-Pearson lower bound on ``p_A``.
        sigma, n, alpha: the noise level, number of estimation draws and failure probability.
        n0: number of selection draws that chose ``c_A``.
    """

    prediction: Tensor
    radius: Tensor
    counts: Tensor
    p_lower: Tensor
    sigma: float
    n: int
    alpha: float
    n0: int = 100

    def __repr__(self) -> str:
        certified = self.prediction != ABSTAIN
        med = f"{self.radius[certified].median().item():.4g}" if bool(certified.any()) else "n/a"
        return (f"SmoothingCertificate(B={len(self.prediction)}, sigma={self.sigma:g}, n={self.n}, "
                f"alpha={self.alpha:g}, abstain={1 - certified.float().mean().item():.3f}, "
                f"median_radius={med})")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON-ready)."""
        return {"prediction": self.prediction.tolist(), "radius": self.radius.tolist(),
                "counts": self.counts.tolist(), "p_lower": self.p_lower.tolist(),
                "sigma": self.sigma, "n": self.n, "n0": self.n0, "alpha": self.alpha}

    def certified_accuracy(self, y: Tensor, radii: Sequence[float] = RADII) -> dict[float, float]:
        """See :func:`certified_accuracy`."""
        return certified_accuracy(self, y, radii)


def smooth_certify(model: nn.Module, x: Tensor, *, sigma: float, n0: int = 100,
                   n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                   bounds: tuple[float, float] = (0.0, 1.0),
                   generator: torch.Generator | None = None) -> SmoothingCertificate:
    """CERTIFY of Cohen et al. (2019, Sec. 3.2): a class and an L2 radius per input.

    ``c_A`` is the top class of ``n0`` noise draws; ``p_lower`` is the one-sided Clopper-Pearson
    bound at level ``alpha`` on its probability from ``n`` fresh draws; where ``p_lower > 1/2``
    the smoothed classifier is ``c_A`` on the L2 ball of radius ``sigma * Phi^-1(p_lower)``
    (with probability >= ``1 - alpha``), else the input abstains (``-1``, radius 0).
    The model runs in eval mode (restored afterwards); ``x`` (``(B, ...)`` in ``bounds``) is not
    modified; ``generator`` makes the draws reproducible (for a fixed ``batch_size``).
    """
    _check_settings(sigma, alpha, n0=n0, n=n, batch_size=batch_size)
    check_inputs(x, bounds=bounds)
    with model_guard(model):
        x = x.detach()
        classes = _num_classes(model, x)
        guess, counts = (sample_counts(model, x, sigma=sigma, num=num, num_classes=classes,
                                       batch_size=batch_size, generator=generator)
                         for num in (n0, n))
        guess = guess.argmax(dim=1)  # (B,) from the n0 selection draws; counts (B, K) from n
    n_a = counts.gather(1, guess[:, None]).squeeze(1).tolist()
    p_lower = torch.tensor([clopper_pearson_lower(k, n, alpha) for k in n_a], dtype=torch.float64)
    certified = p_lower > 0.5
    radius = torch.tensor([sigma * normal_ppf(p) if ok else 0.0
                           for p, ok in zip(p_lower.tolist(), certified.tolist())])
    prediction = torch.where(certified.to(guess.device), guess, torch.full_like(guess, ABSTAIN))
    return SmoothingCertificate(prediction, radius.to(x.device), counts, p_lower.to(x.device),
                                float(sigma), n, float(alpha), n0)


def _correct_at(cert: SmoothingCertificate, y: Tensor, radius: float) -> Tensor:
    y = torch.as_tensor(y, device=cert.prediction.device)
    if y.shape != cert.prediction.shape:
        raise ValueError(f"y has shape {tuple(y.shape)}, the certificate covers "
                         f"{tuple(cert.prediction.shape)} inputs")
    return (cert.prediction == y) & (cert.radius >= radius)


def certified_accuracy(cert: SmoothingCertificate, y: Tensor,
                       radii: Sequence[float] = RADII) -> dict[float, float]:
    """Fraction of inputs with ``prediction == y`` and ``radius >= r``, for each ``r`` in ``radii``.

    ``y``: ``(B,)`` true labels. This is the approximate certified test accuracy of Cohen et al.
    (Sec. 4); intervals come with :func:`certified_accuracy_table`.
    """
    return {float(r): _correct_at(cert, y, r).float().mean().item() for r in radii}


def certified_accuracy_table(cert: SmoothingCertificate, y: Tensor,
                             radii: Sequence[float] = RADII, *,
                             confidence: float = 0.95) -> list[CertifiedAccuracy]:
    """Certified accuracy at each radius with its two-sided Clopper-Pearson interval.

    A fine grid of ``radii`` gives the certified-accuracy curve of Cohen et al. (Fig. 6-7).
    """
    return [accuracy_with_interval(int(_correct_at(cert, y, r).sum()), len(cert.prediction),
                                   radius=float(r), confidence=confidence) for r in radii]
