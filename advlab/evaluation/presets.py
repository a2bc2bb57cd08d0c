"""Attack ensembles for :func:`advlab.evaluate`: ``fast``, ``standard`` and ``thorough``.

``standard`` follows AutoAttack's standard version (Croce & Hein 2020): APGD-CE, then targeted
APGD with the DLR loss over the top-9 classes (tried in the order of their clean logits, stopping
after two consecutive target ranks that broke no point of the batch), then the black-box Square
attack (Andriushchenko et al. 2020) -- each run only on the points that are still robust. DLR is
invariant to logit scaling, so it does not saturate on models that return huge logits, and Square
uses no gradients, so it still works when gradients are masked. FAB-T is left out under Linf
and L2 (it broke no point there that the others missed); under L1 ``standard`` is AutoAttack's
L1 version -- APGD-CE-L1 and APGD-T-L1 with the larger radii, FAB-T-L1 over 9 targets (Croce &
Hein 2020) and Square-L1 (Croce & Hein 2021) -- plus the minimal-norm FMN-L1. What each target
rank and FAB-T add over the other attacks is measured in ``benchmarks/evaluation.py`` (the
"Evaluation" section of ``benchmarks/README.md``). ``thorough`` adds restarts, every target
class, the minimal-norm FMN attack and more Square queries.

Square in ``standard`` is a probe that escalates: 1000 queries on the points APGD left robust,
and AutoAttack's full 5000 on the points still robust only when the probe broke at least one
point or the sanity checks saw masked gradients (zero, NaN or vanishing margin gradients that
straight-through BPDA does not restore, probabilities) -- on those the full budget runs
straight away. On models whose gradients
are informative Square almost never breaks a point APGD missed, so the probe saves most of its
cost without lowering the bar where it matters (measured in ``benchmarks/evaluation.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from advlab.threat import ThreatModel

AttackFn = Callable[..., Tensor]  # (model, x, y, threat, generator=...) -> x_adv


@dataclass(frozen=True)
class AttackStep:
    """One member of an ensemble.

    Attributes:
        name: label used in results ("apgd-ce", "apgd-t", "square", ...).
        run: ``run(model, x, y, threat, generator=g) -> x_adv``; ``g`` is an
            :class:`advlab.streams.PointStreams` with one stream per row of ``x`` (every advlab
            attack takes it; a function that needs a ``torch.Generator`` calls
            :func:`advlab.streams.batch_generator` on it).
        blackbox: uses no gradients (counts for the ``blackbox_stronger`` flag).
        min_classes: skip the step for models with fewer classes (DLR needs 3, targeted DLR 4).
        max_classes: skip the step for models with more classes (a stand-in for a stronger step).
        norms: threat norms the step supports.
        escalate: a stronger (costlier) version of ``run``. It runs on the points still robust
            when ``run`` broke at least one point, and replaces ``run`` when the sanity checks
            suspect gradient masking.
        stand_in: the model the step attacks instead of the evaluated one (a BPDA wrapper or a
            surrogate); its candidates that fool the stand-in but not the model count as
            transfer failures (the ``transfer_failure`` flag).
    """

    name: str
    run: AttackFn
    blackbox: bool = False
    min_classes: int = 2
    max_classes: int = 1_000_000
    norms: tuple[str, ...] = ("linf", "l2", "l1")
    escalate: AttackFn | None = None
    stand_in: nn.Module | None = None


def _apgd(**options: object) -> AttackFn:
    from advlab.attacks.apgd import apgd

    return functools.partial(apgd, **options)


def _square(**options: object) -> AttackFn:
    from advlab.attacks.square import square

    return functools.partial(square, **options)


def _fab(**options: object) -> AttackFn:
    from advlab.attacks.fab import fab

    return functools.partial(fab, **options)


def _fmn_bounded(steps: int = 100) -> AttackFn:
    """FMN (Pintor et al. 2021) as a bounded attack: its minimal perturbation, kept if within eps."""
    from advlab.attacks.fmn import fmn

    def run(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, generator=None) -> Tensor:
        x_adv = fmn(model, x, y, norm=threat.norm, steps=steps, bounds=threat.bounds, generator=generator)
        return threat.project(x, x_adv)

    return run


LP = ("linf", "l2")


def _l1_standard() -> list[AttackStep]:
    """L1 in ``standard``: AutoAttack's L1 version (Croce & Hein 2021: APGD-L1 with 5 restarts and
    the larger-radii schedule, APGD-T-L1 over 5 target classes), FAB-T-L1 over 9 target classes
    (Croce & Hein 2020; like APGD-T it stops after two consecutive target ranks broke nothing)
    and the minimal-norm FMN-L1 (Pintor et al. 2021). Square-L1 (Croce & Hein 2021) follows with
    the other norms' Square step."""
    return [
        AttackStep("apgd-ce", _apgd(loss="ce", steps=100, restarts=5, large_eps=True), norms=("l1",)),
        AttackStep("apgd-t", _apgd(loss="dlr", steps=100, target="top", n_target_classes=5,
                                   large_eps=True), min_classes=4, norms=("l1",)),
        AttackStep("fab-t", _fab(steps=100, target="top", n_target_classes=9, target_patience=2),
                   norms=("l1",)),
        AttackStep("fmn", _fmn_bounded(steps=100), norms=("l1",)),
    ]


def _preset(name: str) -> list[AttackStep]:
    if name == "fast":
        return [AttackStep("apgd-ce", _apgd(loss="ce", steps=20))]
    if name == "standard":
        return [
            AttackStep("apgd-ce", _apgd(loss="ce", steps=100), norms=LP),
            AttackStep("apgd-t", _apgd(loss="dlr", steps=100, target="top", n_target_classes=9,
                                       target_patience=2), min_classes=4, norms=LP),
            *_l1_standard()[:2],
            # stands in for the targeted step when a model has exactly 3 classes
            AttackStep("apgd-dlr", _apgd(loss="dlr", steps=100), min_classes=3, max_classes=3),
            *_l1_standard()[2:],
            AttackStep("square", _square(queries=1000), blackbox=True, escalate=_square(queries=5000)),
        ]
    if name == "thorough":
        return [
            AttackStep("apgd-ce", _apgd(loss="ce", steps=100, restarts=5)),
            AttackStep("apgd-t", _apgd(loss="dlr", steps=100, target="top", n_target_classes=99,
                                       restarts=2), min_classes=4),
            AttackStep("apgd-dlr", _apgd(loss="dlr", steps=100, restarts=5), min_classes=3),
            AttackStep("fab-t", _fab(steps=100, target="top", n_target_classes=9), norms=("l1",)),
            AttackStep("fmn", _fmn_bounded(steps=200)),
            AttackStep("square", _square(queries=10000), blackbox=True),
        ]
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


PRESETS = ("fast", "standard", "thorough")


def resolve_ensemble(attacks: str | list[AttackStep], num_classes: int, norm: str) -> list[AttackStep]:
    """The members of a preset (or of a user list) that apply to ``num_classes`` and ``norm``.

    With 3 classes the targeted step is replaced by untargeted DLR; a step that supports no norm
    of the threat model is dropped.
    """
    members = _preset(attacks) if isinstance(attacks, str) else list(attacks)
    usable = [s for s in members
              if s.min_classes <= num_classes <= s.max_classes and norm in s.norms]
    if not usable:
        raise ValueError(f"no attack of {attacks!r} applies to a {num_classes}-class model under {norm}")
    return usable


resolve_steps = resolve_ensemble  # the old name, kept for one release
