"""Fast gradient sign method (FGSM) and its L2 sibling, the fast gradient method (FGM).

Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial Examples": one step of
length ``eps`` along the steepest-ascent direction of the loss,
``x_adv = x + eps * sign(grad_x J(x, y))``. The direction comes from the threat model
(:meth:`advlab.threat.ThreatModel.ascent_direction`), so the same function covers every norm:

* ``linf``: the sign of the gradient (FGSM proper);
* ``l2``: the normalised gradient ``grad / ||grad||_2`` -- this *is* the fast gradient method
  (FGM) of Miyato et al. (2016) and Kurakin, Goodfellow & Bengio (2017), so :func:`fgm` is the
  very same function registered under a second name, to be used with an L2 threat model;
* ``l1``: the sparse step on the largest gradient coordinates (see ``ascent_direction``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.attacks._core import finalize, input_grad, model_guard, prepare, reject_targeted
from advlab.attacks.losses import LossFn, get_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, bounded_result
from advlab.threat import ThreatModel


@register_attack("fgsm", kind="bounded")
@reject_targeted
def fgsm(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, loss: str | LossFn = "ce",
         target: Tensor | None = None, generator: torch.Generator | None = None,
         return_info: bool = False) -> Tensor | AttackResult:
    """One gradient step of length ``eps`` (Goodfellow et al. 2015); FGM under an L2 threat.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: clean inputs ``(B, ...)`` inside ``threat.bounds``.
        y: the true labels ``(B,)``.
        threat: the threat model (norm, ``eps`` float or ``(B,)``, bounds).
        loss: ``"ce"`` (default), ``"cw"``, ``"dlr"`` or a callable ``(logits, y) -> (B,)``.
        target: ``(B,)`` classes to reach (a targeted step: ascends the targeted loss, i.e.
            descends the cross-entropy to ``target``); ``None`` steps away from ``y``.
        generator: unused (FGSM is deterministic); accepted for a uniform interface.
        return_info: return an :class:`~advlab.attacks.result.AttackResult` (one gradient pass
            per sample) instead of ``x_adv``.

    Returns:
        ``x_adv`` of shape ``(B, ...)``, inside the threat model and the bounds.
    """
    loss_fn = get_loss(loss, targeted=target is not None)
    goal = y if target is None else target  # the labels the loss takes
    with model_guard(model):
        prepare(model, x, y, threat, target=target)
        grad, _, _ = input_grad(model, x, goal, loss_fn)  # (B, ...)
        x_adv = threat.step(x, grad, threat.eps_per_sample(x))
        x_adv = finalize(x, threat.project(x, x_adv), threat)
        if not return_info:
            return x_adv
        return bounded_result(model, x, y, x_adv, threat, target=target, gradients=1)


#: The fast gradient method (FGM; Miyato et al. 2016, Kurakin et al. 2017) is FGSM with an L2
#: threat model: the same function, registered under its own name.
fgm = register_attack("fgm", kind="bounded")(fgsm)

__all__ = ["fgm", "fgsm"]
