"""The lecture and paper experiments, built on the measurements of :mod:`advlab.geometry`,
:mod:`advlab.attacks` and :mod:`advlab.evaluation`.

* :mod:`advlab.experiments.random_relu`: one gradient step flips random ReLU networks (Bubeck
  et al. 2021; Bartlett et al. 2021), the sweep of ``advlab theory random-relu``;
* :mod:`advlab.experiments.spirals`: small vs over-parametrised MLPs on two spirals, the
  experiment of ``advlab theory spirals``;
* :mod:`advlab.experiments.story`: the stages of ``advlab demo`` (minimal perturbations,
  gallery, universal and spatial attacks), each storing a record the report renders;
* :mod:`advlab.experiments.runs`: training a model into a run directory, as ``advlab train``
  does, for the demo.

Experiments import geometry, never the reverse. ``seed`` (an int) is taken only by the entry
points that the command line calls; everything below them takes ``generator=``.
"""

from __future__ import annotations

from advlab.experiments.random_relu import (
    plot_random_relu,
    random_relu_experiment,
    random_relu_sweep,
    summarise_claims,
)
from advlab.experiments.spirals import spirals_compare, train_mlp
from advlab.experiments.story import (
    gallery_stage,
    minimal_norm_stage,
    spatial_stage,
    universal_stage,
)

__all__ = ["gallery_stage", "minimal_norm_stage", "plot_random_relu", "random_relu_experiment",
           "random_relu_sweep", "spatial_stage", "spirals_compare", "summarise_claims", "train_mlp",
           "universal_stage"]
