"""Stronger single-step adversarial training: N-FGSM and GradAlign.

Both are per-batch objectives of the one fit loop built on
:class:`~advlab.training.defenses.adversarial.AdversarialTraining` (crafting on the unwrapped
model in eval mode, loss through the training model, BatchNorm statistics from clean data) and
both watch for catastrophic overfitting with the
:class:`~advlab.training.defenses.overfitting.CollapseWatch` of ``fgsm-rs`` (rollback, a lower
step size, or a stop). Their generators are seeded per rank by ``fit`` and saved in its
checkpoints, so resuming is exact, under torchrun too.

* ``n-fgsm`` -- de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez & Dokania (2022), "Make Some Noise:
  Reliable and Efficient Single-Step Adversarial Training" (NeurIPS): noise ``eta`` uniform in
  ``[-k eps, k eps]`` (k = 2), one signed-gradient step of ``alpha = eps`` from ``x + eta``,
  and *no* projection back onto the eps-ball (only onto the [0, 1] box): the training
  perturbation reaches ``(k + 1) eps`` in Linf. Cost: one input-gradient pass per batch, as
  FGSM.
* ``grad-align`` -- Andriushchenko & Flammarion (2020), "Understanding and Improving Fast
  Adversarial Training" (NeurIPS): FGSM (or FGSM-RS) training plus
  ``lam * (1 - cos(grad_x l(x), grad_x l(x + eta)))`` with ``eta`` uniform in the eps-ball,
  differentiated through the second gradient (double backpropagation, about 3x an FGSM step).

Defaults rescaled to inputs in [0, 1]: the papers already work in [0, 1] (eps = 8/255 on
CIFAR-10), so N-FGSM's k = 2 and alpha = eps carry over unchanged at any eps. GradAlign's
lambda is tuned per eps in the paper and grows with it (0.2 at eps = 8/255); advlab's default
``lam=None`` is ``0.2 * (eps / (8/255))**2`` (:func:`grad_align_lambda`): the penalty guards the
local linearity whose violation grows like ``eps**2`` -- 2.03 at Fashion-MNIST's eps = 0.1.
This rescaling is a choice, not a measured optimum; pass ``lam`` to override it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_number
from advlab.attacks._core import input_grad
from advlab.attacks.losses import ce_loss
from advlab.training.defenses._base import Crafting, RunningMean, frozen_bn_stats
from advlab.training.defenses.adversarial import AdversarialTraining
from advlab.training.defenses.overfitting import watch_from, watch_options
from advlab.training.protocol import (
    EpochReport,
    ObjectiveOutput,
    register_objective,
    unwrap_model,
)

#: GradAlign's lambda at eps = 8/255 on CIFAR-10 (Andriushchenko & Flammarion 2020).
GRAD_ALIGN_LAMBDA, GRAD_ALIGN_EPS = 0.2, 8 / 255


def grad_align_lambda(eps: float) -> float:
    """advlab's default GradAlign weight at ``eps`` (inputs in [0, 1]): ``0.2 (eps / (8/255))^2``."""
    return GRAD_ALIGN_LAMBDA * (float(eps) / GRAD_ALIGN_EPS) ** 2


class NFGSM(AdversarialTraining):
    """N-FGSM (de Jorge et al. 2022): ``x' = clip_[0,1](x + eta + alpha sign(grad l(x + eta)))``,
    ``eta ~ U[-k eps, k eps]`` (clipped to the box), loss ``CE(f(x'), y)``; ``clip_ratio``
    (default None, as the paper) would project ``x' - x`` onto the ``clip_ratio * eps`` ball.

    The collapse watch compares PGD with the training attack projected onto the eps-ball (its
    unprojected perturbation is larger than the threat model, so it is not comparable as is).
    """

    def __init__(self, crafting: Crafting, *, noise_ratio: float, clip_ratio: float | None,
                 **options: Any) -> None:
        super().__init__(crafting, steps=1, random_start=True, **options)
        self.noise_ratio = check_number("noise_ratio", noise_ratio, allow_zero=True)
        self.clip_ratio = None if clip_ratio is None else check_number("clip_ratio", clip_ratio)
        self._probing = False

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, progress: float) -> Tensor:
        """The training point ``(B, ...)``: noise, one step, box clip (no eps-ball projection)."""
        threat = self.crafting.threat(progress)
        with self.crafting.guard(model) as inner:
            start = x
            if self.noise_ratio > 0:
                noise = threat.with_eps(self.noise_ratio * threat.eps)
                start = noise.random_init(x, generator=self.generator_for(x))  # (B, ...)
            grad, _, _ = input_grad(inner, start, y, ce_loss)
            x_adv = threat.clip(threat.step(start, grad, self.step_size_at(progress)))
        if self.clip_ratio is not None:
            x_adv = threat.with_eps(self.clip_ratio * threat.eps).project(x, x_adv)
        if self._probing:  # the collapse watch: compare with PGD inside the threat model
            x_adv = threat.project(x, x_adv)
        return x_adv.detach()

    def epoch_end(self, model: nn.Module, record: dict[str, Any]) -> EpochReport:
        self._probing = True
        try:
            return super().epoch_end(model, record)
        finally:
            self._probing = False


class GradAlign(AdversarialTraining):
    """GradAlign (Andriushchenko & Flammarion 2020): ``CE(f(x_fgsm), y) + lam * (1 - cos(g(x),
    g(x + eta)))``, ``g = grad_x CE``, ``eta ~ U(eps-ball)``; ``g(x)`` is a constant (no
    gradient flows through it, as in the reference implementation), ``g(x + eta)`` is
    differentiated (``create_graph``). Both gradients are taken in train mode with BatchNorm
    running statistics frozen; the second through the (possibly DDP-wrapped) training model so
    that its parameter gradients are averaged across processes.
    """

    def __init__(self, crafting: Crafting, *, lam: float, **options: Any) -> None:
        super().__init__(crafting, steps=1, **options)
        self.lam = check_number("lam", lam, allow_zero=True)
        self.cosine = RunningMean()

    def reset(self) -> None:
        super().reset()
        self.cosine = RunningMean()

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        output = super().loss(model, x, y)  # CE on the FGSM point; draws the FGSM-RS start first
        if self.lam == 0:
            return output
        threat = self.crafting.threat(self.progress)
        x_eta = threat.random_init(x, generator=self.generator_for(x))  # (B, ...)
        inner = unwrap_model(model)
        with frozen_bn_stats(inner, enabled=not self.crafting.bn_adv_stats), torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            (clean,) = torch.autograd.grad(F.cross_entropy(inner(x_req), y, reduction="sum"),
                                           x_req)
            eta_req = x_eta.detach().requires_grad_(True)
            (noisy,) = torch.autograd.grad(F.cross_entropy(model(eta_req), y, reduction="sum"),
                                           eta_req, create_graph=True)
        cosine = F.cosine_similarity(clean.detach().flatten(1), noisy.flatten(1), dim=1)  # (B,)
        self.cosine.add(cosine.mean(), len(y))
        loss = output.loss + self.lam * (1.0 - cosine).mean()
        return ObjectiveOutput(loss, output.logits, output.adv_logits)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "cosine": self.cosine.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.cosine.load(state["cosine"])

    def epoch_end(self, model: nn.Module, record: dict[str, Any]) -> EpochReport:
        report = super().epoch_end(model, record)
        report.metrics = {**report.metrics, "grad_cosine": self.cosine.pop(), "lambda": self.lam}
        return report


@register_objective("n-fgsm",
                    description="de Jorge et al. 2022: FGSM from noise of 2 eps, step eps, no "
                                "eps-ball clipping (watching for catastrophic overfitting)")
def n_fgsm(*, eps: float = 0.1, noise_ratio: float = 2.0, step_ratio: float = 1.0,
           step_size: float | None = None, clip_ratio: float | None = None, norm: str = "linf",
           eps_ramp: float = 0.0, craft_train: bool = False, bn_adv_stats: bool = False,
           clean_logits: bool = True, check: bool = True, check_size: int = 128,
           check_steps: int = 5, check_attack: str = "pgd", check_drop: float = 0.2,
           check_gap: float = 0.3, on_collapse: str = "lower", decay: float = 0.8,
           max_rollbacks: int = 3) -> NFGSM:
    """N-FGSM, de Jorge et al. (2022), "Make Some Noise": noise ``U[-k eps, k eps]`` with
    ``k = noise_ratio`` (2), one step of ``step_ratio * eps`` (1) or ``step_size``, no eps-ball
    clipping unless ``clip_ratio``; the ``check_*`` / ``on_collapse`` / ``decay`` /
    ``max_rollbacks`` options (and ``check_attack``) are those of ``fgsm-rs``'s
    catastrophic-overfitting watch."""
    watch = watch_options(locals())
    crafting = Crafting(eps=eps, norm=norm, eps_ramp=eps_ramp, train_mode=craft_train,
                        bn_adv_stats=bn_adv_stats)
    settings = {"noise_ratio": noise_ratio, "step_ratio": step_ratio, "step_size": step_size,
                "clip_ratio": clip_ratio, "clean_logits": clean_logits, "check": check,
                **watch}
    return NFGSM(crafting, noise_ratio=noise_ratio, clip_ratio=clip_ratio, step_size=step_size,
                 step_ratio=check_number("step_ratio", step_ratio), clean_logits=clean_logits,
                 watch=watch_from(check, watch), settings=settings)


@register_objective("grad-align",
                    description="Andriushchenko & Flammarion 2020: FGSM + lam (1 - cos) "
                                "gradient-alignment penalty (watching for catastrophic overfitting)")
def grad_align(*, eps: float = 0.1, lam: float | None = None, random_start: bool = False,
               step_ratio: float | None = None, step_size: float | None = None,
               norm: str = "linf", eps_ramp: float = 0.0, craft_train: bool = False,
               bn_adv_stats: bool = False, clean_logits: bool = True, check: bool = True,
               check_size: int = 128, check_steps: int = 5, check_attack: str = "pgd",
               check_drop: float = 0.2, check_gap: float = 0.3, on_collapse: str = "lower",
               decay: float = 0.8, max_rollbacks: int = 3) -> GradAlign:
    """GradAlign, Andriushchenko & Flammarion (2020): FGSM (step ``eps``; with ``random_start``
    FGSM-RS, step ``1.25 eps``) plus ``lam (1 - cos(grad l(x), grad l(x + eta)))``; ``lam``
    defaults to :func:`grad_align_lambda` of ``eps``; the watch options are ``fgsm-rs``'s."""
    watch = watch_options(locals())
    crafting = Crafting(eps=eps, norm=norm, eps_ramp=eps_ramp, train_mode=craft_train,
                        bn_adv_stats=bn_adv_stats)
    weight = grad_align_lambda(crafting.eps) if lam is None else float(lam)
    ratio = (1.25 if random_start else 1.0) if step_ratio is None else step_ratio
    settings = {"lam": weight, "random_start": random_start, "step_ratio": ratio,
                "step_size": step_size, "clean_logits": clean_logits, "check": check,
                **watch}
    return GradAlign(crafting, lam=weight, step_size=step_size,
                     step_ratio=check_number("step_ratio", ratio), random_start=random_start,
                     clean_logits=clean_logits, watch=watch_from(check, watch),
                     settings=settings)
