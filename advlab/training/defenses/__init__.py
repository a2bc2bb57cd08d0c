"""Robust-training objectives (defenses), registered in :data:`advlab.training.OBJECTIVES`.

==============  ===========================================================================
``none``        standard training (:func:`advlab.training.standard_objective`)
``fgsm-mix``    Goodfellow et al. 2015: ``w J(x) + (1 - w) J(x_fgsm)``, ``w = clean_weight``
``pgd-at``      Madry et al. 2018: PGD with random start as the inner maximisation
``fgsm-rs``     Wong, Rice & Kolter 2020: FGSM from a random start, step 1.25 eps, with the
                catastrophic-overfitting watch (rollback, lower step or stop)
``trades``      Zhang et al. 2019: ``CE + beta KL(f(x) || f(x'))``, inner max on the KL
``cure``        Moosavi-Dezfooli et al. 2019: curvature penalty (finite difference or
                Hutchinson ``||H||_F^2``)
``clip``        Bungert et al. 2021: Lipschitz penalty on adversarially updated input pairs,
                adaptive lambda
``noise``       Gaussian / uniform noise augmentation (the baseline)
``n-fgsm``      de Jorge et al. 2022: FGSM from noise of 2 eps, step eps, no projection
``grad-align``  Andriushchenko & Flammarion 2020: FGSM plus a gradient-alignment penalty
``ibp``         Gowal et al. 2018: interval bound propagation, certified Linf training
==============  ===========================================================================

    from advlab.training import fit, get_objective
    fit(model, train, objective=get_objective("pgd-at", eps=0.1, steps=7), ...)

Each is a :class:`Defense`: it owns a ``torch.Generator`` seeded by ``fit`` from the run's seed
and rank, and saves it (with its schedules) in fit's checkpoints, so resuming is exact.
"""

from advlab.training.defenses._base import Crafting, Defense, ascend, frozen_bn_stats
from advlab.training.defenses.adversarial import (
    TRADES,
    AdversarialTraining,
    FGSMMix,
    fgsm_rs,
    pgd_at,
)
from advlab.training.defenses.fast import NFGSM, GradAlign, grad_align, n_fgsm
from advlab.training.defenses.ibp import IBP
from advlab.training.defenses.noise import Noise
from advlab.training.defenses.overfitting import CollapseWatch
from advlab.training.defenses.regularizers import CLIP, CURE

__all__ = ["CLIP", "CURE", "IBP", "NFGSM", "TRADES", "AdversarialTraining", "CollapseWatch", "Crafting",
           "Defense", "FGSMMix", "GradAlign", "Noise", "ascend", "fgsm_rs", "frozen_bn_stats",
           "grad_align", "n_fgsm", "pgd_at"]
