"""Per-sample worst case over an attack ensemble, pooled across several eps (AutoAttack-style).

Each attack runs only on points that are still robust; every candidate adversarial example is
re-checked (inside the threat model and the bounds, and misclassified by a fresh forward pass)
before it counts. Adversarial examples are pooled across eps: one found at distance ``d`` breaks
the point at every ``eps >= d``, so larger eps only attack what smaller eps left robust, and the
robust-accuracy curve is monotone by construction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard, predict
from advlab.attacks._iterate import SmallestAdversarial
from advlab.evaluation.draws import Judge
from advlab.evaluation.presets import AttackStep
from advlab.streams import Randomness, batch_generator, for_rows
from advlab.threat import ThreatModel

logger = logging.getLogger(__name__)
Progress = Callable[[str, int], None]  # (attack name, points done) -> None


@dataclass
class Pool:
    """The best (smallest-distance) verified adversarial example found so far per sample: the
    attacks' :class:`~advlab.attacks._iterate.SmallestAdversarial` plus which attack found it
    at which eps."""

    best: SmallestAdversarial  # x (N, ...): x where none was found; norm (N,): inf where none
    attack: list[str | None]  # (N,) name of the attack that found it
    found_at_eps: Tensor  # (N,) eps of the run that found it (nan where none)

    @classmethod
    def empty(cls, x: Tensor) -> Pool:
        n = len(x)
        return cls(SmallestAdversarial.start(x), [None] * n,
                   torch.full((n,), float("nan"), device=x.device, dtype=x.dtype))

    @property
    def x_adv(self) -> Tensor:
        return self.best.x

    @property
    def distance(self) -> Tensor:
        return self.best.norm

    def broken(self, eps: Tensor) -> Tensor:
        """``(N,)`` bool: an adversarial example within ``eps`` (``(N,)`` or scalar) is known."""
        return self.distance <= eps * (1 + 1e-5) + 1e-6

    def update(self, index: Tensor, x_adv: Tensor, distance: Tensor, name: str, eps: Tensor) -> None:
        """Offer verified examples ``x_adv`` ``(A, ...)`` for the sorted rows ``index`` ``(A,)``."""
        verified = torch.ones_like(index, dtype=torch.bool)
        better = self.best.update(x_adv, distance, verified, index=index)
        index = index[better]
        self.found_at_eps[index] = eps[better]
        for i in index.tolist():
            self.attack[i] = name


@dataclass
class StepStats:
    """What one attack of the ensemble did at one eps."""

    ran_on: int = 0
    breaks: int = 0
    time_s: float = 0.0
    claimed: int = 0  # candidates that fooled the step's stand-in (BPDA wrapper, surrogate)
    transfer_failed: int = 0  # ... of which the evaluated model classified correctly


@dataclass
class EnsembleOutcome:
    """Raw outcome of one eps: per-step statistics and sanity observations."""

    eps: float
    per_attack: dict[str, StepStats] = field(default_factory=dict)
    blackbox_breaks: int = 0
    recheck_failed: int = 0
    recheck_total: int = 0


def verify(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, threat: ThreatModel,
           batch_size: int, *, judge: Judge | None = None, index: Tensor | None = None) -> Tensor:
    """``(B,)`` bool: ``x_adv`` is inside the threat model and misclassified (a fresh forward
    pass, or ``judge``'s majority vote over draws for the rows ``index`` on a randomised model)."""
    inside = threat.contains(x, x_adv)
    if judge is not None and index is not None:
        return inside & judge.wrong(index, x_adv, y)
    with model_guard(model):
        wrong = predict(model, x_adv, batch_size).argmax(dim=1) != y
    return inside & wrong


def run_step(step: AttackStep, model: nn.Module, attack_model: nn.Module, x: Tensor, y: Tensor,
             threat: ThreatModel, index: Tensor, *, batch_size: int, generator: Randomness,
             progress: Progress | None = None, escalated: bool = False,
             judge: Judge | None = None, stats: StepStats | None = None) -> tuple[Tensor, Tensor]:
    """Run ``step`` (its ``escalate`` form when ``escalated``) on the points ``index`` in batches;
    return (broken index, verified x_adv). With a ``step.stand_in``, ``stats`` counts the
    candidates that fool the stand-in and those of them the model resists (transfer failures)."""
    run = step.escalate if escalated and step.escalate is not None else step.run
    broken, examples = [], []
    for chunk in index.split(batch_size):
        sub_threat = threat.select(chunk)
        candidate = run(attack_model, x[chunk], y[chunk], sub_threat, generator=for_rows(generator, chunk))
        ok = verify(model, x[chunk], candidate, y[chunk], sub_threat, batch_size, judge=judge,
                    index=chunk)
        if step.stand_in is not None and stats is not None:
            _count_transfer(step.stand_in, candidate, y[chunk], ok, stats, batch_size)
        broken.append(chunk[ok])
        examples.append(candidate[ok])
        if progress is not None:
            progress(step.name, len(chunk))
    return torch.cat(broken), torch.cat(examples)


def _count_transfer(stand_in: nn.Module, candidate: Tensor, y: Tensor, ok: Tensor,
                    stats: StepStats, batch_size: int) -> None:
    with model_guard(stand_in):
        claimed = predict(stand_in, candidate, batch_size).argmax(dim=1) != y
    stats.claimed += int(claimed.sum())
    stats.transfer_failed += int((claimed & ~ok).sum())


def attack_one_eps(model: nn.Module, attack_model: nn.Module, x: Tensor, y: Tensor,
                   threat: ThreatModel, ensemble: list[AttackStep], pool: Pool, correct: Tensor, *,
                   batch_size: int, generator: Randomness,
                   progress: Progress | None = None, suspicious: bool = False,
                   judge: Judge | None = None) -> EnsembleOutcome:
    """Attack the points of ``correct`` not yet broken at ``threat.eps``; update ``pool``.

    ``suspicious`` (the sanity checks saw signs of gradient masking) runs the escalated form of
    every step that has one straight away; otherwise it runs only where the plain form broke a point.
    """
    eps = threat.eps_per_sample(x)
    nominal = threat.eps if isinstance(threat.eps, float) else (float(eps.max()) if len(eps) else 0.0)
    outcome = EnsembleOutcome(eps=nominal)

    def attack_remaining(step: AttackStep, stats: StepStats, escalated: bool) -> int:
        """Run ``step`` on the correct points not yet broken within ``eps``; return its breaks."""
        index = (correct & ~pool.broken(eps)).nonzero().squeeze(1)
        if len(index) == 0:
            return 0
        start = time.perf_counter()
        broken, examples = run_step(step, model, attack_model, x, y, threat, index,
                                    batch_size=batch_size, generator=generator,
                                    progress=progress, escalated=escalated, judge=judge,
                                    stats=stats)
        pool.update(broken, examples, threat.distance(x[broken], examples), step.name, eps[broken])
        elapsed = time.perf_counter() - start
        stats.ran_on, stats.breaks = max(stats.ran_on, len(index)), stats.breaks + len(broken)
        stats.time_s += elapsed
        if step.blackbox:
            outcome.blackbox_breaks += len(broken)
        logger.info("eps=%g %s%s: %d/%d broken in %.1fs", outcome.eps, step.name,
                    " (escalated)" if escalated else "", len(broken), len(index), elapsed)
        return len(broken)

    if len(eps) == 0 or float(eps.max()) == 0.0:  # nothing can move: no attack can break a point
        outcome.per_attack = {step.name: StepStats() for step in ensemble}
        return outcome
    for step in ensemble:
        stats = outcome.per_attack.setdefault(step.name, StepStats())
        escalated = suspicious and step.escalate is not None
        breaks = attack_remaining(step, stats, escalated)
        if breaks and not escalated and step.escalate is not None:
            logger.info("eps=%g %s broke %d points: escalating", outcome.eps, step.name, breaks)
            attack_remaining(step, stats, escalated=True)
    return outcome


def recheck_smaller_eps(model: nn.Module, attack_model: nn.Module, x: Tensor, y: Tensor,
                        threat: ThreatModel, step: AttackStep, pool: Pool, eps_before: float, *,
                        sample: int, batch_size: int, generator: Randomness,
                        outcome: EnsembleOutcome, judge: Judge | None = None) -> None:
    """Monotonicity check: re-attack a few points already broken at a smaller eps.

    If the first attack fails at the larger eps on many points that were broken at a smaller one,
    the attacks do not find the worst case reliably (the ``not_monotone`` flag).
    """
    index = pool.broken(torch.tensor(eps_before, device=x.device)).nonzero().squeeze(1)
    if len(index) == 0:
        return
    shuffle = batch_generator(generator)
    gen_device = shuffle.device if shuffle is not None else torch.device("cpu")
    perm = torch.randperm(len(index), generator=shuffle, device=gen_device)[:sample]
    index = index[perm.to(index.device)]
    broken, _ = run_step(step, model, attack_model, x, y, threat, index, batch_size=batch_size,
                         generator=generator, judge=judge)
    outcome.recheck_total += len(index)
    outcome.recheck_failed += len(index) - len(broken)
