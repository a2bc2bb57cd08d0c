"""Geometric regularisers: CURE (input-space curvature) and CLIP (Lipschitz constant).

Both add a penalty to the clean cross-entropy and backpropagate through it, so their penalty
forward passes go through the (possibly DDP-wrapped) training model with BatchNorm running
statistics frozen (:func:`frozen_bn_stats`); CLIP's inner update of its input pairs runs like
an attack, on the unwrapped model in eval mode (:class:`Crafting`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_choice, check_int, check_number
from advlab.attacks.losses import ce_loss
from advlab.curvature_fd import finite_difference_curvature
from advlab.threat import ThreatModel, lp_norm
from advlab.training.defenses._base import (
    Crafting,
    Defense,
    RunningMean,
    frozen_bn_stats,
)
from advlab.training.protocol import ObjectiveOutput, register_objective, unwrap_model

ESTIMATORS = ("finite-difference", "hutchinson")


def _per_sample_sq_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).pow(2).sum(dim=1)  # (B,)


@register_objective("cure",
                    description="Moosavi-Dezfooli et al. 2019: input-curvature penalty (finite "
                                "difference or Hutchinson)")
class CURE(Defense):
    """CURE, Moosavi-Dezfooli, Fawzi, Uesato & Frossard (2019), "Robustness via curvature
    regularization, and vice versa": ``CE + lam * ||grad l(x + h z) - grad l(x)||^2`` with
    ``z = sign(grad l(x)) / ||sign(grad l(x))||_2`` -- a finite-difference estimate of the
    input-Hessian's action ``h * H z`` along the direction that matters for an Linf attacker.

    Args:
        lam: weight of the penalty (4 in the paper).
        h: the finite-difference length (L2, inputs in [0, 1]; the paper's 1.5), or a list of
            per-epoch values (the last one held), as the reference code's schedule.
        h_ramp: with a float ``h``, grow it linearly from 0 over this fraction of training.
        estimator: ``"finite-difference"`` (the paper) or ``"hutchinson"``: ``||H v||^2`` with a
            Rademacher ``v`` by double backpropagation, an unbiased estimate of ``||H||_F^2``
            (Hutchinson 1990), the whole curvature rather than one direction's.
        samples: Rademacher vectors per input for ``"hutchinson"``.
        bn_adv_stats: let the penalty's forward pass update BatchNorm running statistics.

    ``z`` comes from the input gradient of the clean training forward pass itself (no extra
    pass); the penalty is differentiated through (``create_graph``), about 4x a plain step.
    """

    def __init__(self, *, lam: float = 4.0, h: float | list[float] = 1.5, h_ramp: float = 0.0,
                 estimator: str = "finite-difference", samples: int = 1,
                 bn_adv_stats: bool = False) -> None:
        super().__init__()
        self.lam = check_number("lam", lam, allow_zero=True)
        values = list(h) if isinstance(h, (list, tuple)) else [h]
        self.h_values = [check_number("h", v) for v in values] or [1.5]
        if not 0.0 <= h_ramp <= 1.0:
            raise ValueError(f"h_ramp is a fraction of training in [0, 1], got {h_ramp}")
        self.h_ramp = float(h_ramp)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.samples = check_int("samples", samples)
        self.bn_adv_stats = bool(bn_adv_stats)
        self.penalty = RunningMean()
        self.settings = {"lam": self.lam, "h": h, "h_ramp": self.h_ramp,
                         "estimator": estimator, "samples": samples, "bn_adv_stats": bn_adv_stats}

    def reset(self) -> None:
        self.penalty = RunningMean()

    def h_at(self, step: int) -> float:
        """The finite-difference length at optimiser step ``step`` (0-based)."""
        if len(self.h_values) > 1:
            epoch = step // self.steps_per_epoch
            return self.h_values[min(epoch, len(self.h_values) - 1)]
        progress = min(step / self.total_steps, 1.0)
        return self.h_values[0] * (min(1.0, progress / self.h_ramp) if self.h_ramp > 0 else 1.0)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            logits = model(x_req)  # (B, K), train mode
            losses = F.cross_entropy(logits, y, reduction="none")  # (B,)
            (grad,) = torch.autograd.grad(losses.sum(), x_req, create_graph=True)  # (B, ...)
            if self.estimator == "hutchinson":
                penalty = self._hutchinson(grad, x_req)
            else:
                penalty = self._finite_difference(model, x, y, grad)  # (B,)
        self.penalty.add(penalty.mean(), len(y))
        return ObjectiveOutput(losses.mean() + self.lam * penalty.mean(), logits)

    def _finite_difference(self, model: nn.Module, x: Tensor, y: Tensor, grad: Tensor) -> Tensor:
        with frozen_bn_stats(unwrap_model(model), enabled=not self.bn_adv_stats):
            return finite_difference_curvature(model, x, y, grad, h=self.h_at(self.step),
                                               loss_fn=ce_loss, create_graph=True)  # (B,)

    def _hutchinson(self, grad: Tensor, x_req: Tensor) -> Tensor:
        generator = self.generator_for(x_req)
        total = torch.zeros(len(x_req), device=x_req.device, dtype=x_req.dtype)
        for _ in range(self.samples):
            v = torch.randint(0, 2, x_req.shape, generator=generator, device=x_req.device)
            v = v.to(x_req.dtype) * 2 - 1  # Rademacher
            (hv,) = torch.autograd.grad((grad * v).sum(), x_req, create_graph=True)
            total = total + _per_sample_sq_norm(hv)
        return total / self.samples

    def extra_state(self) -> dict[str, Any]:
        return {"penalty": self.penalty.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.penalty.load(state["penalty"])

    def epoch_report(self, model: nn.Module, record: dict[str, Any]) -> dict[str, Any]:
        return {"curvature_penalty": self.penalty.pop(), "h": self.h_at(max(self.step - 1, 0))}


@register_objective("clip",
                    description="Bungert et al. 2021: Lipschitz penalty on adversarially updated input pairs")
class CLIP(Defense):
    """CLIP, Bungert, Raab, Roith, Schwinn & Tenbrinck (2021), "CLIP: Cheap Lipschitz Training
    of Neural Networks": ``CE + lam * Lip(f, X_Lip)`` where ``Lip`` is the largest difference
    quotient ``||f(u) - f(v)||_2 / ||u - v||_2`` (logits) over input pairs ``(u, v)`` that are
    updated adversarially -- ``steps`` ascent steps on the quotient -- and ``lam`` adapts:
    after each epoch it grows by ``lam_step`` while the training accuracy exceeds
    ``target_acc`` and shrinks by it otherwise (kept in ``[lam / 1000, 4 * lam]``).

    Pairs start at ``(x, x + uniform noise in the eps-ball)`` for each batch and stay in that
    ball around the batch, so ``Lip`` is the *local* Lipschitz constant that bounds the robust
    margin (the paper lets pairs roam the input box). ``reduction="mean"`` penalises the mean
    quotient instead of the max (smoother gradients).
    """

    def __init__(self, *, lam: float = 0.01, target_acc: float = 0.9,
                 lam_step: float | None = None, eps: float = 0.3, steps: int = 5,
                 step_size: float | None = None, norm: str = "linf", reduction: str = "max",
                 craft_train: bool = False, bn_adv_stats: bool = False) -> None:
        super().__init__()
        self.lam0 = check_number("lam", lam)
        if not 0.0 < target_acc <= 1.0:
            raise ValueError(f"target_acc must lie in (0, 1], got {target_acc}")
        self.target_acc = float(target_acc)
        self.lam_step = 0.4 * self.lam0 if lam_step is None else check_number("lam_step", lam_step)
        self.steps = check_int("steps", steps, minimum=0)
        self.step_size = None if step_size is None else check_number("step_size", step_size)
        self.reduction = check_choice("reduction", reduction, ("max", "mean"))
        self.crafting = Crafting(eps=eps, norm=norm, train_mode=craft_train,
                                 bn_adv_stats=bn_adv_stats)
        self.settings = {"lam": lam, "target_acc": target_acc, "lam_step": self.lam_step,
                         "steps": steps, "step_size": step_size, "reduction": reduction,
                         **self.crafting.settings()}
        self.reset()

    def reset(self) -> None:
        self.lam = self.lam0
        self.lipschitz = RunningMean()

    def _quotients(self, logits: Tensor, pairs: Tensor) -> Tensor:
        """``(2B, K), (2B, ...) -> (B,)`` difference quotients of the pairs ``(u_i, v_i)``."""
        f_u, f_v = logits.chunk(2)
        u, v = pairs.chunk(2)
        return lp_norm(f_u - f_v, "l2") / lp_norm(u - v, "l2").clamp_min(1e-8)

    def _update_pairs(self, inner: nn.Module, x: Tensor, threat: ThreatModel) -> Tensor:
        """``steps`` sign-ascent steps on the quotients; returns ``cat([u, v])`` ``(2B, ...)``."""
        centres = torch.cat([x, x])  # (2B, ...)
        pairs = torch.cat([x, threat.random_init(x, generator=self.generator_for(x))])
        step = self.step_size if self.step_size is not None else threat.eps / 4
        for _ in range(self.steps):
            with torch.enable_grad():
                pairs_req = pairs.detach().requires_grad_(True)
                quotients = self._quotients(inner(pairs_req), pairs_req)
                (grad,) = torch.autograd.grad(quotients.sum(), pairs_req)
            pairs = threat.project(centres, threat.step(pairs, grad, step))
        return pairs.detach()

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        threat = self.crafting.threat(self.progress)
        with self.crafting.guard(model) as inner:
            pairs = self._update_pairs(inner, x, threat)
        logits = model(x)  # (B, K), train mode
        pair_logits = self.crafting.forward_adversarial(model, pairs)  # (2B, K)
        quotients = self._quotients(pair_logits, pairs)  # (B,)
        lipschitz = quotients.max() if self.reduction == "max" else quotients.mean()
        self.lipschitz.add(lipschitz, len(y))
        return ObjectiveOutput(F.cross_entropy(logits, y) + self.lam * lipschitz, logits)

    def extra_state(self) -> dict[str, Any]:
        return {"lam": self.lam, "lipschitz": self.lipschitz.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lam"])
        self.lipschitz.load(state["lipschitz"])

    def epoch_report(self, model: nn.Module, record: dict[str, Any]) -> dict[str, Any]:
        """Report this epoch's lambda and Lipschitz estimate, then adapt lambda."""
        metrics = {"lambda": self.lam, "lipschitz": self.lipschitz.pop()}
        accuracy = record.get("train_acc")
        if accuracy is not None:
            sign = 1.0 if accuracy > self.target_acc else -1.0
            self.lam = min(max(self.lam + sign * self.lam_step, self.lam0 / 1000), 4 * self.lam0)
        return metrics
