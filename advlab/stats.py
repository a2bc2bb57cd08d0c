"""Exact binomial statistics (certificates, accuracies with intervals): Clopper-Pearson bounds and the binomial test.

Clopper & Pearson (1934) bound a binomial proportion from ``k`` successes in ``n`` trials by
inverting the binomial tail: the one-sided lower bound at level ``alpha`` is the ``p`` with
``P(X >= k; n, p) = alpha``, i.e. the ``alpha`` quantile of Beta(k, n - k + 1). Randomized
smoothing (Cohen, Rosenfeld & Kolter 2019) uses it for ``p_A``, and the two-sided binomial test
for abstention in PREDICT.

``scipy.stats`` is used when it is importable (it is not a dependency of advlab); otherwise the
same numbers come from bisection on the binomial tail, summed in log space in float64. Pass
``backend="torch"`` to force the fallback (the tests compare both).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

BACKENDS = ("auto", "scipy", "torch")


def _scipy_stats() -> Any:  # scipy.stats, or None without scipy
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return stats


def _use_scipy(backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "scipy" and _scipy_stats() is None:
        raise ImportError("backend='scipy' needs scipy; install it or use backend='torch'")
    return backend != "torch" and _scipy_stats() is not None


def _check_counts(k: int, n: int) -> tuple[int, int]:
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    return k, n


def _check_level(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return value


def _log_tail_terms(k: int, n: int) -> tuple[Tensor, Tensor]:
    """``j = k..n`` and ``log C(n, j)`` in float64, for :func:`log_binomial_tail`."""
    j = torch.arange(k, n + 1, dtype=torch.float64)
    return j, math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)


def _log_tail(j: Tensor, log_coef: Tensor, n: int, p: float) -> float:
    p_t = torch.tensor(p, dtype=torch.float64)
    return float(torch.logsumexp(log_coef + j * torch.log(p_t) + (n - j) * torch.log1p(-p_t), dim=0))


def log_binomial_tail(k: int, n: int, p: float) -> float:
    """``log P(X >= k)`` for ``X ~ Binomial(n, p)``, summed in log space (float64)."""
    k, n = _check_counts(k, n)
    if k == 0 or p >= 1.0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    return _log_tail(*_log_tail_terms(k, n), n, p)


@functools.lru_cache(maxsize=4096)
def _bisect_tail(k: int, n: int, log_level: float, bisection_steps: int = 64) -> float:
    """The ``p`` in (0, 1) with ``log P(X >= k; n, p) = log_level`` (the tail increases in p).

    Needs ``1 <= k <= n``; 64 halvings of [0, 1] reach float64 resolution.
    """
    j, log_coef = _log_tail_terms(k, n)
    low, high = 0.0, 1.0
    for _ in range(bisection_steps):
        mid = 0.5 * (low + high)
        if _log_tail(j, log_coef, n, mid) < log_level:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def clopper_pearson_lower(k: int, n: int, alpha: float, *, backend: str = "auto") -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on ``p`` from ``k`` of ``n``.

    Equals ``scipy.stats.beta.ppf(alpha, k, n - k + 1)`` (0 when ``k == 0``), which is the
    lower end of statsmodels' ``proportion_confint(k, n, alpha=2 * alpha, method="beta")`` used
    by Cohen et al.'s reference code.
    """
    k, n = _check_counts(k, n)
    alpha = _check_level("alpha", alpha)
    if k == 0:
        return 0.0
    if _use_scipy(backend):
        return float(_scipy_stats().beta.ppf(alpha, k, n - k + 1))
    return _bisect_tail(k, n, math.log(alpha))


def clopper_pearson_upper(k: int, n: int, alpha: float, *, backend: str = "auto") -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound (``beta.ppf(1 - alpha, k + 1, n - k)``)."""
    k, n = _check_counts(k, n)
    return 1.0 - clopper_pearson_lower(n - k, n, alpha, backend=backend)


def clopper_pearson_interval(k: int, n: int, *, confidence: float = 0.95,
                             backend: str = "auto") -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval ``(low, high)`` at ``confidence`` from ``k`` of ``n``."""
    half = (1.0 - _check_level("confidence", confidence)) / 2
    return (clopper_pearson_lower(k, n, half, backend=backend),
            clopper_pearson_upper(k, n, half, backend=backend))


def binomial_test_half(k: int, n: int, *, backend: str = "auto") -> float:
    """Two-sided p-value of ``k`` successes in ``n`` trials under ``p = 1/2``.

    Equals ``scipy.stats.binomtest(k, n, 0.5).pvalue``: by symmetry ``min(1, 2 P(X >= max(k, n-k)))``.
    """
    k, n = _check_counts(k, n)
    top = max(k, n - k)
    if _use_scipy(backend):
        return float(_scipy_stats().binomtest(k, n, 0.5).pvalue)
    if 2 * top == n:
        return 1.0
    return min(1.0, 2.0 * math.exp(log_binomial_tail(top, n, 0.5)))


def normal_ppf(p: float) -> float:
    """``Phi^-1(p)``, the standard normal quantile (``-inf`` at 0, ``inf`` at 1)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class CertifiedAccuracy:
    """Certified accuracy at one radius with its Clopper-Pearson interval.

    ``accuracy = correct / total``: the fraction certified correct at ``radius`` (L2 for
    smoothing, Linf ``eps`` for IBP); ``(low, high)`` is the two-sided interval at ``confidence``.
    """

    radius: float
    accuracy: float
    low: float
    high: float
    correct: int
    total: int
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"r={self.radius:g}: {self.accuracy:.3f} "
                f"[{self.low:.3f}, {self.high:.3f}] ({self.correct}/{self.total})")


def accuracy_se(accuracy: float, n: int) -> float:
    """The standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on ``n`` points
    (0 for ``n == 0``): the noise scale of a validation accuracy, e.g. ~1.9 points for 75 % on
    500 points."""
    if n <= 0:
        return 0.0
    p = min(max(float(accuracy), 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n)


def accuracy_with_interval(correct: int, total: int, *, radius: float,
                           confidence: float = 0.95) -> CertifiedAccuracy:
    """:class:`CertifiedAccuracy` of ``correct`` out of ``total`` points (0 points: all NaN)."""
    if total == 0:
        return CertifiedAccuracy(radius, math.nan, math.nan, math.nan, 0, 0, confidence)
    low, high = clopper_pearson_interval(correct, total, confidence=confidence)
    return CertifiedAccuracy(float(radius), correct / total, low, high, int(correct), int(total),
                             confidence)
