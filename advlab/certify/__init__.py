"""Certified robustness: lower bounds on robustness, where attacks only give upper bounds.

* Randomized smoothing (Cohen, Rosenfeld & Kolter 2019), certified L2 radii of the smoothed
  classifier: :func:`smooth_predict`, :func:`smooth_certify`, :func:`certified_accuracy`,
  :func:`certified_accuracy_table`.
* Interval bound propagation (Gowal et al. 2018), certified Linf robustness of the model itself:
  :func:`ibp_bounds`, :func:`ibp_certify`, :func:`certified_accuracy_ibp`.
* Certified next to empirical robust accuracy at the same radii: :func:`compare_smoothing`,
  :func:`compare_ibp` (what ``advlab certify`` prints and stores).
* Exact binomial statistics (Clopper-Pearson) in :mod:`advlab.stats`.

    from advlab.certify import smooth_certify, certified_accuracy_table, ibp_certify
    cert = smooth_certify(model, x, sigma=0.25, n=10_000, generator=torch.Generator().manual_seed(0))
    for row in certified_accuracy_table(cert, y):
        print(row)                                    # r=0.25: 0.712 [0.670, 0.751] (356/500)
    ibp_certify(model, x, y, eps=0.1)                 # (B,) bool
"""

from advlab.certify.compare import SoftSmoothed, compare_ibp, compare_smoothing
from advlab.certify.ibp import SUPPORTED, certified_accuracy_ibp, ibp_bounds, ibp_certify
from advlab.certify.smoothing import (
    ABSTAIN,
    RADII,
    SmoothingCertificate,
    certified_accuracy,
    certified_accuracy_table,
    sample_counts,
    smooth_certify,
    smooth_predict,
)
from advlab.stats import (
    CertifiedAccuracy,
    accuracy_with_interval,
    binomial_test_half,
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_upper,
)

__all__ = [
    "ABSTAIN",
    "RADII",
    "SUPPORTED",
    "CertifiedAccuracy",
    "SmoothingCertificate",
    "SoftSmoothed",
    "accuracy_with_interval",
    "binomial_test_half",
    "certified_accuracy",
    "certified_accuracy_ibp",
    "certified_accuracy_table",
    "clopper_pearson_interval",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "compare_ibp",
    "compare_smoothing",
    "ibp_bounds",
    "ibp_certify",
    "sample_counts",
    "smooth_certify",
    "smooth_predict",
]
