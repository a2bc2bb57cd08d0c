"""Old home of the lecture experiments, kept for one release: use :mod:`advlab.experiments`.

``random_relu_sweep`` is :func:`advlab.experiments.random_relu.random_relu_sweep` and
``spirals_compare`` is :func:`advlab.experiments.spirals.spirals_compare`.
"""

from __future__ import annotations

from advlab.experiments.random_relu import (  # noqa: F401
    DEPTHS,
    INPUT_DIMS,
    QUICK_INPUT_DIMS,
    WIDTHS,
    random_relu_sweep,
)
from advlab.experiments.spirals import spirals_compare  # noqa: F401

__all__ = ["random_relu_sweep", "spirals_compare"]
