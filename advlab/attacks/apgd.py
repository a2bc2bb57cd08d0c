"""Auto-PGD (APGD): step-size-free PGD with momentum (Croce & Hein 2020, Algorithm 1).

Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks". APGD starts with step size ``eta = 2 * eps`` and halves it (restarting
from the best point found) at checkpoints ``w_j = ceil(p_j * N)``, ``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, whenever

1. the loss increased in fewer than ``rho * (w_j - w_{j-1})`` of the steps since ``w_{j-1}``, or
2. the step size was not reduced at ``w_{j-1}`` and the best loss has not improved since.

The update uses momentum ``alpha``: ``z = P(x_k + eta * d(grad))``,
``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` (the first step is plain).
Everything is per sample. ``l1`` runs APGD-L1 (Croce & Hein 2021, "Mind the box"): a box-aware
sparse step with adaptive sparsity and the exact projection onto the L1 ball intersected with the
box (:mod:`advlab.attacks.apgd_l1`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab._checks import check_int
from advlab._utils import canonical_name
from advlab.attacks._core import (
    AttackInputError,
    finalize,
    input_grad,
    model_guard,
    prepare,
    reject_targeted,
)
from advlab.attacks._iterate import BestIterate, PassCount, project_onto
from advlab.attacks.apgd_l1 import run_l1
from advlab.attacks.losses import LossFn, cw_loss, dlr_targeted_loss, get_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, bounded_result
from advlab.streams import Randomness, for_rows
from advlab.threat import ThreatModel, per_sample_view

State = dict[str, Tensor]
#: ``(logits, y, target) -> (B,)`` loss to maximise.
AttackLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def checkpoints(steps: int) -> dict[int, int]:
    """``{w_j: w_j - w_{j-1}}`` for the distinct checkpoints ``1 <= w_j <= steps``.

    ``p_j`` is kept in integer hundredths so that ``ceil`` sees no float round-off.
    """
    result: dict[int, int] = {}
    p_prev, p, last = 0, 22, 0
    while p <= 100:
        w = -(-p * steps // 100)  # ceil(p * steps / 100)
        if w > last:
            result[w], last = w - last, w
        p_prev, p = p, p + max(p - p_prev - 3, 6)
    return result


@dataclass(frozen=True)
class _Config:
    model: nn.Module
    threat: ThreatModel
    attack_loss: AttackLoss
    sweep: bool  # target="top": targeted losses, untargeted success and score
    targeted: bool  # a given target tensor: success is reaching it
    steps: int
    rho: float
    momentum: float
    early_stop: bool
    count: PassCount
    large_eps: bool = False
    generator: Randomness = None


def _attack_loss(loss: str | LossFn, targeted: bool) -> AttackLoss:
    """The loss as ``(logits, y, target) -> (B,)``; targeted DLR also needs the true label."""
    if not targeted:
        untargeted = get_loss(loss)
        return lambda logits, y, target: untargeted(logits, y)
    if not callable(loss) and canonical_name(loss) == "dlr":
        return lambda logits, y, target: dlr_targeted_loss(logits, target, y)
    targeted_loss = get_loss(loss, targeted=True)
    return lambda logits, y, target: targeted_loss(logits, target)


def _check_options(target: Tensor | str | None, steps: int, restarts: int, n_target_classes: int,
                   rho: float, momentum: float) -> None:
    if not (target is None or isinstance(target, Tensor) or target == "top"):
        raise AttackInputError(f"target must be None, a (B,) tensor of classes or 'top', got {target!r}")
    check_int("steps", steps)
    check_int("restarts", restarts)
    check_int("n_target_classes", n_target_classes)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [0, 1], got {rho!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")


def _check_classes(loss: str | LossFn, targeted: bool, classes: int) -> None:
    if callable(loss) or canonical_name(loss) != "dlr":
        return
    needed = 4 if targeted else 3
    if classes < needed:
        kind = "targeted DLR loss" if targeted else "DLR loss"
        raise ValueError(f"apgd: the {kind} needs at least {needed} classes but the model has "
                         f"{classes}; use loss='ce' (or 'cw') instead")


@register_attack("apgd", kind="bounded")
@reject_targeted
def apgd(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, loss: str | LossFn = "ce",
         steps: int = 100, restarts: int = 1, target: Tensor | str | None = None,
         n_target_classes: int = 9, rho: float = 0.75, momentum: float = 0.75, early_stop: bool = True,
         target_patience: int | None = None, large_eps: bool = False,
         generator: Randomness = None, return_info: bool = False) -> Tensor | AttackResult:
    """Auto-PGD (Croce & Hein 2020): APGD-CE / APGD-DLR, targeted APGD and, with ``target="top"``, APGD-T.

    ``target="top"`` is AutoAttack's APGD-T sweep: one run per target class among the
    ``n_target_classes`` (default 9, capped at ``K - 1``) classes with the highest clean logits
    other than ``y``, tried in that order, each run only on the samples not fooled yet and
    maximising the targeted loss (targeted DLR or CE) towards its class. Success means
    misclassified (any wrong class), and between unsuccessful iterates the one with the highest
    CW margin is kept.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: clean inputs ``(B, ...)``; y: the true labels ``(B,)`` (also when targeted).
        threat: the threat model (``linf``, ``l2``, ``l1`` (APGD-L1); ``eps`` float or ``(B,)``).
        loss: ``"ce"`` (default), ``"dlr"`` (needs >= 3 classes, targeted >= 4), ``"cw"`` or a callable.
        steps: iterations per run (default 100); restarts: random restarts per run (default 1),
            each only on the samples not fooled yet.
        target: ``None`` (untargeted), a ``(B,)`` tensor of classes to reach (success is
            ``pred == target``) or ``"top"`` (the APGD-T sweep above).
        n_target_classes: number of target classes of the ``"top"`` sweep (default 9).
        rho: oscillation threshold of condition 1 (default 0.75).
        momentum: weight ``alpha`` of the new step against the previous one (default 0.75).
        early_stop: stop working on samples as soon as they are fooled (default True).
        target_patience: ``"top"`` only: stop after this many consecutive target ranks broke no
            sample of the batch (default None: try all ``n_target_classes``). Success concentrates
            on the first ranks (see ``benchmarks/README.md``), so a patience of 2 keeps most of
            the strength of all 9 targets at a fraction of their cost; the ``standard`` preset uses it.
        large_eps: ``l1`` only: AutoAttack's schedule of radii (30 % of the steps at ``3 eps``,
            30 % at ``2 eps``, the rest at ``eps``; only the last stage's iterates count).
        generator: randomness of the uniform random starts.
        return_info: return an :class:`~advlab.attacks.result.AttackResult` whose ``gradients``
            count the gradient passes per sample.

    Returns:
        ``x_adv`` ``(B, ...)`` inside the threat model: per sample a successful iterate when one
        was found, else the iterate with the highest loss (for ``"top"``, the highest CW margin).
    """
    _check_options(target, steps, restarts, n_target_classes, rho, momentum)
    sweep = isinstance(target, str)
    if target_patience is not None:
        check_int("target_patience", target_patience)
    given = target if isinstance(target, Tensor) else None  # a tensor of classes to reach
    cfg = _Config(model, threat, _attack_loss(loss, target is not None), sweep, given is not None,
                  steps, rho, momentum, early_stop, PassCount(x, return_info), bool(large_eps),
                  generator)
    with model_guard(model):
        clean_logits = prepare(model, x, y, threat, target=given)  # (B, K)
        _check_classes(loss, target is not None, clean_logits.shape[1])
        targets = _target_classes(clean_logits, y, n_target_classes) if sweep else (
            y if given is None else given)[:, None]  # (B, T)
        best = _start_best(cfg, x, y, clean_logits, targets[:, 0])
        x_adv = _sweep(cfg, best, x, y, targets, restarts, target_patience, generator)
        if not return_info:
            return x_adv
        return bounded_result(model, x, y, x_adv, threat, target=given, gradients=cfg.count.counts)


def _start_best(cfg: _Config, x: Tensor, y: Tensor, clean_logits: Tensor, first: Tensor) -> BestIterate:
    """The clean points as the first best iterates, scored and judged like the runs' iterates."""
    pred = clean_logits.argmax(dim=1)
    if cfg.sweep:
        return BestIterate.start(x, cw_loss(clean_logits, y), pred != y)
    success = pred == first if cfg.targeted else pred != y
    return BestIterate.start(x, cfg.attack_loss(clean_logits, y, first), success)


def _sweep(cfg: _Config, best: BestIterate, x: Tensor, y: Tensor, targets: Tensor, restarts: int,
           target_patience: int | None, generator: Randomness) -> Tensor:
    """The runs: ``restarts`` per column of ``targets`` ``(B, T)``, each on the samples not fooled yet."""
    eps = cfg.threat.eps_per_sample(x)  # (B,)
    first, empty_ranks = True, 0
    for target in targets.unbind(dim=1):
        fooled_before = int(best.success.sum())
        for _ in range(restarts):
            index = torch.arange(len(x), device=x.device) if first and not cfg.early_stop else best.remaining()
            if index.numel() == 0:
                return finalize(x, best.x, cfg.threat)
            first = False
            x_start = cfg.threat.select(index).random_init(x[index], generator=for_rows(generator, index))
            _run(cfg, best, {"index": index, "x": x[index], "y": y[index], "target": target[index],
                             "eps": eps[index], "x_adv": x_start})
        empty_ranks = 0 if int(best.success.sum()) > fooled_before else empty_ranks + 1
        if cfg.sweep and target_patience is not None and empty_ranks >= target_patience:
            break
    return finalize(x, best.x, cfg.threat)


def _target_classes(clean_logits: Tensor, y: Tensor, n_target_classes: int) -> Tensor:
    """``(B, T)`` classes with the highest clean logits other than ``y``, ``T <= K - 1``."""
    count = min(n_target_classes, clean_logits.shape[1] - 1)
    if count < 1:
        raise ValueError("targeted apgd needs a model with at least 2 classes")
    others = clean_logits.scatter(1, y[:, None], float("-inf"))
    return others.topk(count, dim=1).indices


def _evaluate(cfg: _Config, s: State, x_adv: Tensor, need_grad: bool = True
              ) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    """``(grad, loss, score, success)`` at ``x_adv`` for the samples of state ``s``."""
    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        return cfg.attack_loss(logits, y, s["target"])

    if need_grad:
        grad, loss, logits = input_grad(cfg.model, x_adv, s["y"], loss_fn)
        cfg.count.add(s["index"])
    else:
        with torch.no_grad():
            logits = cfg.model(x_adv)
        grad, loss = None, loss_fn(logits, s["y"])
    score = cw_loss(logits, s["y"]) if cfg.sweep else loss
    goal = s["target"] if cfg.targeted else s["y"]
    pred = logits.argmax(dim=1)
    return grad, loss, score, pred == goal if cfg.targeted else pred != goal


def _run(cfg: _Config, best: BestIterate, s: State) -> None:
    """One APGD run (Algorithm 1) from ``s["x_adv"]``; ``s`` holds per-sample tensors."""
    if cfg.threat.norm == "l1":
        run_l1(cfg, best, s, evaluate=_evaluate, drop=_drop)
        return
    grad, loss, score, success = _evaluate(cfg, s, s["x_adv"])
    best.update(s["index"], s["x_adv"], score, success)
    assert grad is not None
    # A sample whose gradient at the start is exactly zero can never move (every step and every
    # restart from x_max stays put): stop spending passes on it (quantised / masked models).
    stuck = grad.flatten(1).abs().amax(dim=1) == 0
    if bool(stuck.any()):
        s = _drop(s, stuck)
        grad, loss, success = grad[~stuck], loss[~stuck], success[~stuck]
        if s["index"].numel() == 0:
            return
    s.update(x_prev=s["x_adv"], grad=grad, loss_prev=loss, x_max=s["x_adv"], grad_max=grad,
             loss_max=loss, loss_last_check=loss, eta=s["eps"] * 2.0,
             increases=torch.zeros_like(loss), reduced_last=torch.ones_like(success))
    marks = checkpoints(cfg.steps)
    for k in range(cfg.steps):
        s = _drop(s, success) if cfg.early_stop else s
        if s["index"].numel() == 0:
            return
        x_next = _momentum_step(cfg, s, first=k == 0)
        grad, loss, score, success = _evaluate(cfg, s, x_next, need_grad=k + 1 < cfg.steps)
        best.update(s["index"], x_next, score, success)
        if grad is None:  # the last iterate needs no gradient
            return
        _record(s, x_next, grad, loss)
        if k + 1 in marks:
            _checkpoint(cfg, s, marks[k + 1])


def _drop(s: State, mask: Tensor) -> State:
    """``s`` without the samples where ``mask`` ``(B,)`` is True."""
    if not bool(mask.any()):
        return s
    keep = ~mask
    return {name: value[keep] for name, value in s.items()}


def _momentum_step(cfg: _Config, s: State, first: bool) -> Tensor:
    """``x_{k+1}`` from ``x_k``, its gradient and ``x_{k-1}`` (plain projected step when ``first``)."""
    threat, x_adv = cfg.threat, s["x_adv"]
    z = project_onto(threat, s["x"], threat.step(x_adv, s["grad"], s["eta"]), s["eps"])
    if first:
        return z
    alpha = cfg.momentum
    x_next = x_adv + alpha * (z - x_adv) + (1 - alpha) * (x_adv - s["x_prev"])
    return project_onto(threat, s["x"], x_next, s["eps"])


def _record(s: State, x_next: Tensor, grad: Tensor, loss: Tensor) -> None:
    """Advance the iterate and update the best-loss point ``x_max`` (used for restarts)."""
    s["increases"] = s["increases"] + (loss > s["loss_prev"]).to(loss.dtype)
    s["x_prev"], s["x_adv"], s["grad"], s["loss_prev"] = s["x_adv"], x_next, grad, loss
    improved = loss > s["loss_max"]
    mask = per_sample_view(improved, x_next)
    s["x_max"] = torch.where(mask, x_next, s["x_max"])
    s["grad_max"] = torch.where(mask, grad, s["grad_max"])
    s["loss_max"] = torch.where(improved, loss, s["loss_max"])


def _checkpoint(cfg: _Config, s: State, interval: int) -> None:
    """Halve ``eta`` and restart from ``x_max`` where condition 1 or 2 of Algorithm 1 holds."""
    oscillating = s["increases"] < cfg.rho * interval
    stalled = ~s["reduced_last"] & (s["loss_last_check"] >= s["loss_max"])
    reduce = oscillating | stalled
    mask = per_sample_view(reduce, s["x_adv"])
    s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
    s["x_adv"] = torch.where(mask, s["x_max"], s["x_adv"])
    s["grad"] = torch.where(mask, s["grad_max"], s["grad"])
    s["loss_prev"] = torch.where(reduce, s["loss_max"], s["loss_prev"])
    s["reduced_last"], s["loss_last_check"] = reduce, s["loss_max"]
    s["increases"] = torch.zeros_like(s["increases"])


__all__ = ["apgd", "checkpoints"]
