"""Adversarial training: FGSM-mix, PGD-AT, fast FGSM with random start, TRADES.

All craft their perturbations with :func:`~advlab.training.defenses._base.ascend` on the
unwrapped model in eval mode with frozen parameters (:class:`Crafting`), then compute the loss
through the (possibly DDP-wrapped) training model in train mode, with BatchNorm running
statistics kept on clean data. Defaults are the papers' MNIST settings (inputs in [0, 1]).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_int, check_number
from advlab.attacks.losses import ce_loss
from advlab.training.defenses._base import (
    Crafting,
    Defense,
    ascend,
    has_batchnorm,
)
from advlab.training.defenses.overfitting import CollapseWatch, watch_from, watch_options
from advlab.training.protocol import (
    EpochReport,
    ObjectiveOutput,
    register_objective,
    unwrap_model,
)


def _crafting(eps: float, norm: str, eps_ramp: float, craft_train: bool,
              bn_adv_stats: bool) -> Crafting:
    return Crafting(eps=eps, norm=norm, eps_ramp=eps_ramp, train_mode=craft_train,
                    bn_adv_stats=bn_adv_stats)


@register_objective("fgsm-mix",
                    description="Goodfellow et al. 2015: w J(x) + (1 - w) J(x_fgsm), w = clean_weight")
class FGSMMix(Defense):
    """Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial Examples":
    ``w * J(x, y) + (1 - w) * J(x + eps * sign(grad_x J(x, y)), y)`` with ``w = clean_weight``
    (the paper's alpha; the ``noise`` defense has the same ``clean_weight``).

    The paper's MNIST setting: eps = 0.25, clean_weight = 0.5 (and early stopping on the adversarial
    validation error, see :func:`advlab.training.adversarial_validation`). Under an L2 threat
    the inner step is the fast gradient method. Costs one input-gradient pass and two training
    forward passes per batch.
    """

    def __init__(self, *, eps: float = 0.25, clean_weight: float = 0.5, norm: str = "linf",
                 eps_ramp: float = 0.0, craft_train: bool = False,
                 bn_adv_stats: bool = False) -> None:
        super().__init__()
        if not 0.0 <= clean_weight <= 1.0:
            raise ValueError(f"clean_weight (the weight of the clean loss) must lie in [0, 1], got {clean_weight}")
        self.clean_weight = float(clean_weight)
        self.crafting = _crafting(eps, norm, eps_ramp, craft_train, bn_adv_stats)
        self.settings = {"clean_weight": self.clean_weight, **self.crafting.settings()}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        threat = self.crafting.threat(self.progress)
        with self.crafting.guard(model) as inner:
            x_adv = ascend(inner, x, y, threat, ce_loss, steps=1, step_size=threat.eps, start=x)
        logits = model(x)  # (B, K), train mode
        adv_logits = self.crafting.forward_adversarial(model, x_adv)  # (B, K)
        loss = (self.clean_weight * F.cross_entropy(logits, y)
                + (1.0 - self.clean_weight) * F.cross_entropy(adv_logits, y))
        return ObjectiveOutput(loss, logits, adv_logits)


class AdversarialTraining(Defense):
    """Minimise the cross-entropy on projected-gradient perturbations (shared by ``pgd-at``
    and ``fgsm-rs``): ``steps`` ascent steps from a random start, loss on the last iterate.

    ``step_size`` (absolute) or else ``step_ratio * eps`` (eps as ramped). ``clean_logits``
    adds a no-grad train-mode forward of the clean batch for the clean training accuracy; it
    always happens for models with BatchNorm (unless ``bn_adv_stats``), whose running
    statistics it keeps on clean data. ``watch`` guards against catastrophic overfitting.
    """

    def __init__(self, crafting: Crafting, *, steps: int, step_size: float | None,
                 step_ratio: float, random_start: bool, clean_logits: bool,
                 watch: CollapseWatch | None, settings: dict[str, Any]) -> None:
        super().__init__()
        self.crafting, self.steps = crafting, check_int("steps", steps)
        self.step_size = None if step_size is None else check_number("step_size", step_size)
        self.step_ratio, self.random_start = step_ratio, bool(random_start)
        self.clean_logits, self.watch = bool(clean_logits), watch
        self.watches_collapse = watch is not None
        self.step_scale = 1.0  # lowered after catastrophic overfitting
        self.settings = {**settings, **crafting.settings()}

    def reset(self) -> None:
        self.step_scale = 1.0
        if self.watch is not None:
            self.watch.reset()

    def step_size_at(self, progress: float) -> float:
        eps = self.crafting.eps_at(progress)
        base = self.step_size if self.step_size is not None else self.step_ratio * eps
        return base * self.step_scale

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, progress: float) -> Tensor:
        """The training perturbation ``(B, ...)`` at ``progress`` (eps ramp, step size)."""
        threat = self.crafting.threat(progress)
        with self.crafting.guard(model) as inner:
            start = threat.random_init(x, generator=self.generator_for(x)) if self.random_start else x
            return ascend(inner, x, y, threat, ce_loss, steps=self.steps,
                          step_size=self.step_size_at(progress), start=start)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        if self.watch is not None:
            self.watch.observe(x, y)
        x_adv = self.attack(model, x, y, self.progress)
        logits = None
        inner = unwrap_model(model)
        if self.clean_logits or (has_batchnorm(inner) and not self.crafting.bn_adv_stats):
            with torch.no_grad():
                logits = inner(x)  # (B, K); train mode: BatchNorm statistics from clean data
        adv_logits = self.crafting.forward_adversarial(model, x_adv)  # (B, K)
        return ObjectiveOutput(F.cross_entropy(adv_logits, y), logits, adv_logits)

    # -- catastrophic overfitting ----------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        watch = self.watch.state_dict() if self.watch is not None else None
        return {"step_scale": self.step_scale, "watch": watch}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step_scale = float(state["step_scale"])
        if self.watch is not None and state.get("watch") is not None:
            self.watch.load_state_dict(state["watch"])

    def epoch_end(self, model: nn.Module, record: dict[str, Any]) -> EpochReport:
        metrics: dict[str, Any] = {"eps": self.crafting.eps_at(self.last_progress),
                                   "step_size": self.step_size_at(self.last_progress)}
        if self.watch is None:
            return EpochReport(metrics)

        def train_attack(x: Tensor, y: Tensor) -> Tensor:  # at full eps, like the PGD probe
            return self.attack(model, x, y, progress=1.0)

        threat = self.crafting.threat(1.0)  # always the full eps: ramps must not look like drops
        probe, collapse = self.watch.check(model, threat, self._generator(), train_attack)
        return EpochReport({**metrics, **probe}, collapse)

    def after_rollback(self, count: int) -> str | None:
        """Lower the step size after the ``count``-th collapse, or ``None`` to stop."""
        assert self.watch is not None
        scale = self.watch.remedy(count)
        if scale is None:
            return None
        self.step_scale = scale
        return f"lowered the step size to {self.step_size_at(self.progress):.4g} ({scale:.3g} x)"


@register_objective("pgd-at",
                    description="Madry et al. 2018: PGD with random start as the inner maximisation")
def pgd_at(*, eps: float = 0.3, steps: int = 40, step_size: float | None = None,
           random_start: bool = True, norm: str = "linf", eps_ramp: float = 0.0,
           craft_train: bool = False, bn_adv_stats: bool = False,
           clean_logits: bool = True) -> AdversarialTraining:
    """PGD adversarial training, Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep
    Learning Models Resistant to Adversarial Attacks": ``min E max_{||d|| <= eps} J(x + d, y)``
    with the inner max by ``steps`` of projected gradient ascent from a uniform random start.

    The paper's MNIST setting: eps = 0.3, 40 steps of 0.01. Default step: ``2.5 * eps / steps``
    (advlab.attacks.pgd's rule; 0.019 there). Cost: ``steps`` input-gradient passes per batch.
    """
    crafting = _crafting(eps, norm, eps_ramp, craft_train, bn_adv_stats)
    settings = {"steps": steps, "step_size": step_size, "random_start": random_start,
                "clean_logits": clean_logits}
    return AdversarialTraining(crafting, steps=steps, step_size=step_size,
                               step_ratio=2.5 / check_int("steps", steps),
                               random_start=random_start, clean_logits=clean_logits, watch=None,
                               settings=settings)


@register_objective("fgsm-rs",
                    description="Wong, Rice & Kolter 2020: FGSM from a random start, watching for "
                                "catastrophic overfitting")
def fgsm_rs(*, eps: float = 0.3, step_size: float | None = None, step_ratio: float = 1.25,
            norm: str = "linf", eps_ramp: float = 0.0, craft_train: bool = False,
            bn_adv_stats: bool = False, clean_logits: bool = True, check: bool = True,
            check_size: int = 128, check_steps: int = 5, check_attack: str = "pgd",
            check_drop: float = 0.2, check_gap: float = 0.3, on_collapse: str = "lower",
            decay: float = 0.8, max_rollbacks: int = 3) -> AdversarialTraining:
    """Fast adversarial training, Wong, Rice & Kolter (2020), "Fast is better than free": one
    FGSM step of ``1.25 * eps`` from a uniform random start in the eps-ball (use with the
    cyclic ``onecycle`` learning-rate schedule, fit's default).

    Catastrophic overfitting (the PGD accuracy collapsing within an epoch or two) is watched as
    in the paper: after each epoch a ``check_steps``-step PGD (step eps/4, random start,
    :func:`advlab.attacks.pgd`; ``check_attack="apgd-ce"``: APGD-CE, which sees collapses on
    BatchNorm networks that this PGD misses) attacks a fixed training minibatch of ``check_size`` samples;
    when its accuracy falls more than ``check_drop`` below the best seen, or lies more than
    ``check_gap`` below the accuracy under the training attack itself (see
    :class:`~advlab.training.defenses.overfitting.CollapseWatch`), fit rolls back to the
    previous epoch and, with ``on_collapse="lower"``, redoes it with the step size times
    ``decay`` (``decay**k`` after the k-th collapse; after ``max_rollbacks`` it stops), or with
    ``"stop"`` stops there. Each collapse is logged and recorded in the run's ``events``.
    """
    crafting = _crafting(eps, norm, eps_ramp, craft_train, bn_adv_stats)
    watch = watch_options(locals())
    settings = {"step_size": step_size, "step_ratio": step_ratio, "clean_logits": clean_logits,
                "check": check, **watch}
    return AdversarialTraining(crafting, steps=1, step_size=step_size,
                               step_ratio=check_number("step_ratio", step_ratio),
                               random_start=True, clean_logits=clean_logits,
                               watch=watch_from(check, watch),
                               settings=settings)


def _kl_to(logits: Tensor, probs: Tensor) -> Tensor:
    """Per-sample ``KL(probs || softmax(logits))``: ``(B, K), (B, K) -> (B,)``."""
    log_probs = probs.clamp_min(1e-12).log()
    return (probs * (log_probs - F.log_softmax(logits, dim=1))).sum(dim=1)


@register_objective("trades",
                    description="Zhang et al. 2019: CE + beta KL(f(x) || f(x')), inner max on the KL")
class TRADES(Defense):
    """TRADES, Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan (2019), "Theoretically Principled
    Trade-off between Robustness and Accuracy":
    ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'`` maximising the KL term in the
    eps-ball (``steps`` sign-gradient steps from ``x + 0.001 * N(0, I)``, as the reference code).

    The paper's MNIST setting: eps = 0.3, 40 steps of 0.01, beta = 1/lambda = 6. Default step:
    ``2.5 * eps / steps``. The KL's clean distribution comes from the crafting-mode forward.
    """

    def __init__(self, *, eps: float = 0.3, beta: float = 6.0, steps: int = 40,
                 step_size: float | None = None, norm: str = "linf", eps_ramp: float = 0.0,
                 craft_train: bool = False, bn_adv_stats: bool = False) -> None:
        super().__init__()
        self.beta = check_number("beta", beta, allow_zero=True)
        self.steps = check_int("steps", steps)
        self.step_size = None if step_size is None else check_number("step_size", step_size)
        self.crafting = _crafting(eps, norm, eps_ramp, craft_train, bn_adv_stats)
        self.settings = {"beta": self.beta, "steps": steps, "step_size": step_size,
                         **self.crafting.settings()}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        threat = self.crafting.threat(self.progress)
        step = self.step_size if self.step_size is not None else 2.5 * threat.eps / self.steps
        generator = self.generator_for(x)
        with self.crafting.guard(model) as inner:
            with torch.no_grad():
                clean_probs = F.softmax(inner(x), dim=1)  # (B, K)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            start = threat.project(x, x + 0.001 * noise)
            x_adv = ascend(inner, x, clean_probs, threat, _kl_to, steps=self.steps,
                           step_size=step, start=start)
        logits = model(x)  # (B, K), train mode
        adv_logits = self.crafting.forward_adversarial(model, x_adv)  # (B, K)
        robust = _kl_to(adv_logits, F.softmax(logits, dim=1)).mean()
        loss = F.cross_entropy(logits, y) + self.beta * robust
        return ObjectiveOutput(loss, logits, adv_logits)
