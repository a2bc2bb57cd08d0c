"""Old home of the spirals experiment, kept for one release: use :mod:`advlab.experiments.spirals`.

``train_mlp`` is :func:`advlab.experiments.spirals.train_mlp`; the experiment itself is
:func:`advlab.experiments.spirals.spirals_compare` (the former ``spirals_experiment`` drew a
subset of its figures and is gone).
"""

from __future__ import annotations

from advlab.experiments.spirals import spirals_compare, train_mlp  # noqa: F401

__all__ = ["spirals_compare", "train_mlp"]
