"""Projected gradient descent (PGD) with restarts, best-iterate tracking and early stopping.

Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant to
Adversarial Attacks": iterate ``x_{k+1} = P(x_k + alpha * d(grad_x L(x_k, y)))`` where ``d`` is
the threat model's steepest-ascent direction (sign for ``linf``, normalised gradient for ``l2``,
sparse step for ``l1``) and ``P`` projects onto the eps-ball intersected with the box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab._checks import check_int
from advlab.attacks._core import (
    check_inputs,
    check_target,
    finalize,
    input_grad,
    model_guard,
    prepare,
    reached,
    reject_targeted,
)
from advlab.attacks._iterate import (
    BestIterate,
    PassCount,
    per_sample_step_size,
    project_onto,
    rows_of,
)
from advlab.attacks.losses import LossFn, get_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, bounded_result
from advlab.streams import Randomness, for_rows
from advlab.threat import Eps, ThreatModel


@register_attack("pgd", kind="bounded")
@reject_targeted
def pgd(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, steps: int = 10,
        step_size: Eps | None = None, random_start: bool = False, restarts: int = 1,
        loss: str | LossFn = "ce", target: Tensor | None = None, early_stop: bool = False,
        generator: Randomness = None, return_info: bool = False) -> Tensor | AttackResult:
    """Projected gradient descent (Madry et al. 2018), returning the best iterate per sample.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: clean inputs ``(B, ...)``; y: the true labels ``(B,)``.
        threat: the threat model (norm, ``eps`` float or ``(B,)``, bounds).
        steps: gradient steps per restart (default 10).
        step_size: float or ``(B,)``; default ``2.5 * eps / steps`` (Madry et al.), per sample
            when ``eps`` is.
        random_start: start from a uniform point of the ball instead of ``x``.
        restarts: number of runs; every run after the first starts at a random point (whatever
            ``random_start`` says) and only attacks the samples not fooled yet.
        loss: ``"ce"`` (default), ``"dlr"``, ``"cw"`` or a callable ``(logits, y) -> (B,)``.
        target: ``(B,)`` classes to reach (targeted losses; success is ``pred == target``);
            ``None`` (default) leaves the class ``y``.
        early_stop: stop updating a sample once it is fooled (the active batch shrinks, later
            steps get cheaper) and return as soon as all are fooled.
        generator: randomness of the random starts.
        return_info: return an :class:`~advlab.attacks.result.AttackResult` whose
            ``gradients`` count the gradient passes per sample (fewer for early-stopped samples).

    Returns:
        ``x_adv`` ``(B, ...)`` inside the threat model: per sample the best point seen over the
        start points, all iterates and all restarts -- a fooling one if any, else the one with the
        highest loss. Iterate losses come from the gradient passes; the last iterate of each run is
        evaluated once more on the samples no iterate of that run has fooled yet, so a run costs
        ``steps`` forward+backward passes and at most one forward (on few rows once most samples
        are fooled).
    """
    check_int("steps", steps)
    check_int("restarts", restarts)
    targeted = target is not None
    loss_fn = get_loss(loss, targeted=targeted)
    goal = y if target is None else target  # the labels the loss and the success test take
    with model_guard(model):
        check_target(target, y)
        eps = threat.eps_per_sample(x)  # (B,)
        default = eps * (2.5 / steps) if isinstance(threat.eps, Tensor) else threat.eps * 2.5 / steps
        step = per_sample_step_size(step_size, eps, default)  # a float, or (B,) for per-sample sizes
        best = _start(model, x, y, threat, loss_fn, target, at_clean=not random_start)
        count = PassCount(x, return_info)
        for restart in range(restarts):
            index = best.remaining() if early_stop or restart > 0 else torch.arange(len(x), device=x.device)
            if index.numel() == 0:
                break
            x_orig = x[index]
            x_start = threat.select(index).random_init(x_orig, generator=for_rows(generator, index)) if random_start or restart > 0 else x_orig
            _run(model, threat, loss_fn, best, (index, x_orig, goal[index], eps[index], rows_of(step, index)),
                 x_start, steps=steps, targeted=targeted, early_stop=early_stop,
                 from_clean=restart == 0 and not random_start, count=count)
        x_adv = finalize(x, best.x, threat)
        if not return_info:
            return x_adv
        return bounded_result(model, x, y, x_adv, threat, target=target, gradients=count.counts)


def _start(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, loss_fn: LossFn,
           target: Tensor | None, at_clean: bool) -> BestIterate:
    """The best iterate before the first step. When the first run starts at ``x`` its first
    gradient pass scores (and checks) the clean point, so no separate clean pass is needed
    (a target out of range is then reported by that pass's label check)."""
    if at_clean:
        check_inputs(x, y, threat)
        return BestIterate.start(x, torch.full((len(x),), -math.inf, device=x.device, dtype=x.dtype),
                                 torch.zeros(len(x), dtype=torch.bool, device=x.device))
    clean_logits = prepare(model, x, y, threat, target=target)
    goal = y if target is None else target
    return BestIterate.start(x, loss_fn(clean_logits, goal), reached(clean_logits, goal, targeted=target is not None))


def _run(model: nn.Module, threat: ThreatModel, loss_fn: LossFn, best: BestIterate,
         batch: tuple[Tensor, ...], x_adv: Tensor, *, steps: int, targeted: bool,
         early_stop: bool, from_clean: bool = False, count: PassCount) -> None:
    """One PGD run from ``x_adv`` on the samples ``batch = (index, x, goal, eps, step_size)``
    (``goal``: the true labels, or the target classes when ``targeted``).

    ``from_clean``: the run starts at the clean inputs, so its first gradient pass also checks
    the model's outputs, and a clean point that is already misclassified does not count as
    fooled by the run (its last iterate is still scored: pgd with one step equals fgsm).
    """
    index, x_orig, labels, eps, step = batch
    fooled = torch.zeros_like(index, dtype=torch.bool)  # (A,) fooled by an iterate of this run
    box = threat.linf_box(x_orig, eps) if threat.norm == "linf" else None  # Linf: project = 1 clamp
    for k in range(steps):
        grad, loss, logits = input_grad(model, x_adv, labels, loss_fn, check=from_clean and k == 0)  # (A, ...), (A,), (A, K)
        count.add(index)
        success = reached(logits, labels, targeted=targeted)
        best.update(index, x_adv, loss, success)
        if k > 0 or not from_clean:
            fooled |= success
        if early_stop and bool(success.any()):  # drop the fooled samples from the active batch
            keep = ~success
            index, x_orig, labels, eps, x_adv, grad, fooled = (
                t[keep] for t in (index, x_orig, labels, eps, x_adv, grad, fooled))
            step = rows_of(step, keep)
            box = None if box is None else (box[0][keep], box[1][keep])
            if index.numel() == 0:
                return
        x_next = threat.step(x_adv, grad, step)  # a new tensor: projected in place
        x_adv = x_next.clamp_(*box) if box is not None else project_onto(threat, x_orig, x_next, eps)
    _score_last(model, loss_fn, best, (index, x_adv, labels), ~fooled, targeted)


def _score_last(model: nn.Module, loss_fn: LossFn, best: BestIterate,
                last: tuple[Tensor, Tensor, Tensor], todo: Tensor, targeted: bool) -> None:
    """Offer the last iterate of a run, ``last = (index, x_adv, labels)``, to ``best`` where
    ``todo`` ``(A,)`` says so.

    The samples an iterate of the run already fooled are not forwarded: a fooling iterate
    satisfies "a fooling one if any", so scoring the last one would cost a forward pass for
    nothing the caller relies on (torchattacks skips this pass altogether and returns the last
    iterate unchecked). With most samples fooled the pass is nearly free.
    """
    index, x_adv, labels = last
    if not bool(todo.any()):
        return
    if not bool(todo.all()):
        index, x_adv, labels = index[todo], x_adv[todo], labels[todo]
    with torch.no_grad():
        logits = model(x_adv)
    best.update(index, x_adv, loss_fn(logits, labels), reached(logits, labels, targeted=targeted))


__all__ = ["pgd"]
