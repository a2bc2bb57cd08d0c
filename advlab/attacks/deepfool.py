"""DeepFool: the minimal perturbation that crosses the linearised decision boundary.

Moosavi-Dezfooli, Fawzi & Frossard (2016), "DeepFool: a simple and accurate method to fool deep
neural networks" (CVPR). At every iteration the classifier is linearised around the current point
``x_i``; for each candidate class ``k`` the distance to the boundary between ``y`` and ``k`` is
``|f'_k| / ||w'_k||_q`` with ``f'_k = f_k(x_i) - f_y(x_i)``, ``w'_k = grad f_k(x_i) - grad f_y(x_i)``
and ``q`` the dual norm (``q = 2`` for L2, ``q = 1`` for Linf). The step goes to the nearest
boundary ``l``:

* L2:   ``r_i = |f'_l| / ||w'_l||_2^2 * w'_l``
* Linf: ``r_i = |f'_l| / ||w'_l||_1 * sign(w'_l)``

and the iterate is ``x_{i+1} = clip(x + (1 + overshoot) * sum_j r_j)`` (the overshoot of the
paper, 0.02), until the label flips or ``steps`` iterations have run. As in the authors' reference
code, ``1e-4`` is added to each step length so that a point landing exactly on a boundary of a
(piecewise) linear model still crosses it.

This module also holds :func:`rho_adv`, DeepFool's robustness metric.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_number
from advlab.attacks._core import minimal_norm_threat, model_guard, predict, prepare
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, minimal_result
from advlab.threat import ThreatModel, canonical_norm, lp_norm

#: Added to every DeepFool step length (authors' reference implementation).
_STEP_SLACK = 1e-4


def _candidate_classes(logits: Tensor, y: Tensor, n_target_classes: int) -> Tensor:
    """``(B, C)`` class indices: column 0 is ``y``, then the ``C - 1`` other top classes."""
    count = min(n_target_classes, logits.shape[1]) - 1
    others = logits.scatter(1, y[:, None], -math.inf).topk(count, dim=1).indices  # (B, C-1)
    return torch.cat([y[:, None], others], dim=1)


def _boundary_rows(model: nn.Module, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Logits ``(n, K)``, logit differences ``f'`` ``(n, C-1)`` and their gradients ``w'`` ``(n, C-1, D)``.

    One forward pass and one backward pass per candidate class, each over the whole batch.
    """
    with torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        logits = model(x_req)  # (n, K)
        chosen = logits.gather(1, classes)  # (n, C)
        diffs = chosen[:, 1:] - chosen[:, :1]  # (n, C-1)
        count = diffs.shape[1]
        rows = [torch.autograd.grad(diffs[:, k].sum(), x_req, retain_graph=k < count - 1)[0]
                for k in range(count)]
    grads = torch.stack(rows, dim=1).reshape(x.shape[0], count, -1)  # (n, C-1, D)
    return logits.detach(), diffs.detach(), grads


def _linearised_step(diffs: Tensor, grads: Tensor, norm: str) -> Tensor:
    """DeepFool step towards the nearest linearised boundary: ``(n, C-1), (n, C-1, D) -> (n, D)``."""
    dual_norms = grads.abs().sum(dim=2) if norm == "linf" else grads.norm(dim=2)  # (n, C-1)
    distances = diffs.abs() / dual_norms.clamp_min(1e-12)  # (n, C-1)
    nearest = distances.argmin(dim=1)  # (n,)
    rows = torch.arange(len(nearest), device=grads.device)
    w = grads[rows, nearest]  # (n, D)
    length = distances[rows, nearest] + _STEP_SLACK  # (n,)
    if norm == "linf":
        return length[:, None] * w.sign()
    return length[:, None] * w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _deepfool_loop(model: nn.Module, x: Tensor, classes: Tensor, threat: ThreatModel,
                   steps: int, overshoot: float) -> tuple[Tensor, Tensor]:
    """Run DeepFool on the still-correct samples only; returns ``(x_adv, steps)`` (linearisation
    steps taken per sample, ``(B,)`` int64)."""
    y = classes[:, 0]
    x_adv = x.clone()  # (B, ...)
    r_total = torch.zeros_like(x).flatten(1)  # (B, D)
    steps_taken = torch.zeros(len(x), dtype=torch.long, device=x.device)
    active = torch.arange(len(x), device=x.device)
    for step in range(steps + 1):
        if len(active) == 0:
            break
        if step == steps:  # only check the last iterate
            logits = predict(model, x_adv[active])
        else:
            logits, diffs, grads = _boundary_rows(model, x_adv[active], classes[active])
        still = logits.argmax(dim=1) == y[active]  # label not flipped yet
        active = active[still]
        if step == steps or len(active) == 0:
            break
        r_total[active] += _linearised_step(diffs[still], grads[still], threat.norm)
        moved = x[active] + (1 + overshoot) * r_total[active].reshape(-1, *x.shape[1:])
        x_adv[active] = threat.clip(moved)
        steps_taken[active] += 1
    return x_adv, steps_taken


@register_attack("deepfool", kind="minimal")
def deepfool(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "l2", steps: int = 50,
             overshoot: float = 0.02, n_target_classes: int = 10,
             bounds: tuple[float, float] = (0.0, 1.0), generator: torch.Generator | None = None,
             return_info: bool = False) -> Tensor | AttackResult:
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), batched over samples and classes.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: inputs ``(B, ...)`` in ``bounds``; never modified.
        y: labels ``(B,)``; the attack moves each point across the boundary of ``y``.
        norm: ``"l2"`` or ``"linf"`` (the ``q = 1`` dual step).
        steps: maximum number of linearisation steps (>= 1).
        overshoot: the paper's ``eta``: iterates are ``x + (1 + overshoot) * r_total`` (>= 0).
        n_target_classes: number of classes considered, counting ``y``, ranked by the clean
            logits (>= 2; foolbox's ``candidates``).
        bounds: valid input range; each iterate is clipped into it.
        generator: unused (DeepFool is deterministic); accepted for the common signature.
        return_info: return an :class:`~advlab.attacks.result.AttackResult` with the
            linearisation ``steps`` ``(B,)`` taken per sample in ``extras`` and ``gradients``
            ``(B,)`` = ``steps * (C - 1)`` (one backward pass per candidate class and step).

    Returns:
        ``x_adv`` ``(B, ...)``: the perturbed inputs, ``x`` where the attack failed. Samples that
        are already misclassified are returned unchanged (success with norm 0).
    """
    check_int("steps", steps)
    check_number("overshoot", overshoot, minimum=0.0)
    check_int("n_target_classes", n_target_classes, minimum=2)
    threat = minimal_norm_threat(norm, bounds, ("l2", "linf"), "deepfool")
    with model_guard(model):
        logits = prepare(model, x, y, threat)
        classes = _candidate_classes(logits, y, n_target_classes)  # (B, C)
        x_adv, steps_taken = _deepfool_loop(model, x.detach(), classes, threat, steps, overshoot)
        return minimal_result(model, x, y, x_adv, threat.norm, return_info=return_info,
                              gradients=steps_taken * (classes.shape[1] - 1), steps=steps_taken)


def rho_adv(x: Tensor, x_adv: Tensor, norm: str = "l2", success: Tensor | None = None) -> float:
    """DeepFool's robustness metric ``rho_adv = mean ||x_adv - x|| / ||x||`` (Moosavi-Dezfooli 2016).

    Args:
        x, x_adv: clean and perturbed inputs ``(B, ...)``.
        norm: norm of both numerator and denominator (``"l2"`` in the paper).
        success: ``(B,)`` bool mask of successful attacks; by default the samples whose
            perturbation is non-zero (minimal-norm attacks return ``x`` where they fail).

    Returns:
        The mean ratio over the successful samples, ``nan`` if there are none.
    """
    norm = canonical_norm(norm)
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    perturbation = lp_norm(x_adv - x, norm)  # (B,)
    mask = perturbation > 0 if success is None else success.to(torch.bool)
    if not bool(mask.any()):
        return math.nan
    ratios = perturbation[mask] / lp_norm(x[mask], norm).clamp_min(1e-12)
    return float(ratios.mean())
