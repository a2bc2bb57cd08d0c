"""IBP training: verifiably robust training by interval bound propagation (Gowal et al. 2018).

Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli (2018), "On the
Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models", Sec. 3-4:

    loss = kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat(x, eps), y)

where ``z_hat`` are the worst-case logits of the Linf ball of radius ``eps`` (the IBP upper
bound of ``z_k - z_y`` for ``k != y``, 0 for ``y``; the last linear layer is folded in, their
"elision"), computed by :mod:`advlab.certify.ibp`. The schedules follow the paper, rescaled to
the run length: ``eps`` stays 0 for a warm-up (2k of 60k steps on MNIST: ``warmup=1/30``), then
grows linearly to ``eps`` over a ramp (10k steps: ``ramp=1/6``), while ``kappa`` falls linearly
from 1 to ``kappa_final`` (0.5) over the same ramp. The paper trains at a slightly larger radius
than it certifies (0.4 for 0.3 on MNIST): pass that as ``eps``.

The model must be a Sequential of the layers IBP supports (``advlab.certify.SUPPORTED``);
BatchNorm layers are refused (their batch statistics make the train-mode box ill-defined here).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_number
from advlab.certify.ibp import _layers, _margin_upper
from advlab.training.defenses._base import Defense
from advlab.training.protocol import ObjectiveOutput, register_objective, unwrap_model


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a fraction of the training steps in [0, 1], got {value}")
    return value


@register_objective("ibp", description="Gowal et al. 2018: interval bound propagation, "
                                       "kappa CE(clean) + (1 - kappa) CE(worst-case IBP logits)")
class IBP(Defense):
    """IBP training with the eps ramp and kappa schedule of Gowal et al. (2018).

    Args:
        eps: final Linf training radius (inputs in [0, 1]).
        kappa_final: weight of the clean loss after the ramp (paper: 0.5).
        warmup: fraction of the steps with ``eps = 0`` and ``kappa = 1`` (paper: 2k/60k).
        ramp: fraction of the steps over which ``eps`` grows linearly to its final value and
            ``kappa`` falls to ``kappa_final`` (paper: 10k/60k).
    """

    def __init__(self, *, eps: float = 0.1, kappa_final: float = 0.5, warmup: float = 1 / 30,
                 ramp: float = 1 / 6) -> None:
        super().__init__()
        self.eps = check_number("eps", eps)
        self.kappa_final = _fraction("kappa_final", kappa_final)
        self.warmup, self.ramp = _fraction("warmup", warmup), _fraction("ramp", ramp)
        if self.warmup + self.ramp > 1.0:
            raise ValueError(f"warmup + ramp must be <= 1 (fractions of training), got "
                             f"{self.warmup} + {self.ramp}")
        self.settings = {"eps": self.eps, "kappa_final": self.kappa_final,
                         "warmup": self.warmup, "ramp": self.ramp}

    def schedule(self, progress: float) -> tuple[float, float]:
        """``(eps, kappa)`` after ``progress`` (fraction of training done, in [0, 1])."""
        if self.ramp == 0.0:
            done = 1.0 if progress >= self.warmup else 0.0
        else:
            done = min(1.0, max(0.0, (progress - self.warmup) / self.ramp))
        return self.eps * done, 1.0 - (1.0 - self.kappa_final) * done

    def worst_case_logits(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """``(B, K)`` IBP upper bounds of ``z_k - z_y`` over the Linf ball (0 at ``y``)."""
        layers = list(_layers(unwrap_model(model)))
        for name, layer in layers:
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                raise ValueError(f"ibp training does not support {type(layer).__name__} (at {name!r}); "
                                 "use a model without BatchNorm (mlp, small_cnn, lenet)")
        box = ((x - eps).clamp_min(0.0), (x + eps).clamp_max(1.0))
        return _margin_upper(layers, box, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        eps, kappa = self.schedule(self.progress)
        logits = model(x)  # (B, K): through the (DDP) wrapper, so gradients are synchronised
        clean = F.cross_entropy(logits, y)
        if kappa >= 1.0:
            return ObjectiveOutput(clean, logits, None)
        worst = self.worst_case_logits(model, x, y, eps)
        return ObjectiveOutput(kappa * clean + (1 - kappa) * F.cross_entropy(worst, y), logits, worst)

    def epoch_report(self, model: nn.Module, record: dict[str, Any]) -> dict[str, Any]:
        eps, kappa = self.schedule(self.last_progress)
        return {"ibp_eps": eps, "ibp_kappa": kappa}


__all__ = ["IBP"]
