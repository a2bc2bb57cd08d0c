"""Catastrophic overfitting watch for fast adversarial training.

Wong, Rice & Kolter (2020), "Fast is better than free", Sec. 5: FGSM training can suddenly
overfit to its own single-step perturbations -- within an epoch or two the accuracy under PGD
falls to near zero while the FGSM training accuracy soars. Their remedy is early stopping on the
PGD accuracy of a training minibatch. :class:`CollapseWatch` measures it after every epoch on a
*fixed* minibatch (the first ``size`` samples the objective sees) and reports a collapse when

* it fell more than ``drop`` below the best value so far (Wong et al.'s rule), or
* the accuracy under the *training* attack (one step from a random start) exceeds it by more
  than ``gap`` -- the signature of catastrophic overfitting (the single-step attack has stopped
  finding the worst case; Andriushchenko & Flammarion 2020 track the same gap), which also
  catches runs that overfit before their PGD accuracy ever rose.

``fit`` then rolls back to the previous epoch and the objective lowers its step size
(:meth:`CollapseWatch.remedy`) or the run stops.

The probe attack is the paper's PGD (``attack="pgd"``, the default) or APGD-CE (Croce & Hein
2020, ``attack="apgd-ce"``). On BatchNorm networks PGD-5 with step eps/4 can miss a collapse that
APGD-CE sees (``docs/training-frontier.md``: a pre-activation ResNet under FGSM-RS lost 13 points
of PGD-5 accuracy on the probe but 30 of APGD-CE-5 accuracy), at the same number of gradient passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from advlab._checks import check_choice, check_int, check_number
from advlab.attacks._core import model_guard, predict
from advlab.attacks.apgd import apgd
from advlab.attacks.pgd import pgd
from advlab.threat import ThreatModel

ACTIONS = ("lower", "stop")
#: Probe attacks of the watch and the metric each one's accuracy is recorded as.
PROBES = {"pgd": "probe_pgd_acc", "apgd-ce": "probe_apgd_acc"}


class CollapseWatch:
    """Multi-step attack accuracy on a fixed training minibatch, and the collapse rule.

    Args:
        size: samples in the probe minibatch.
        steps: probe attack steps, 5 as in Wong et al.'s check.
        attack: the probe attack, ``"pgd"`` (step eps / 4, random start, as the paper) or
            ``"apgd-ce"`` (APGD with the CE loss, its own step-size schedule).
        drop: a collapse is an accuracy more than ``drop`` below the best so far (0.2 in the
            paper, against the previous epoch).
        gap: ... or a training-attack accuracy more than ``gap`` above the PGD accuracy.
        action: ``"lower"`` (lower the step size and go on) or ``"stop"``.
        decay: the step size factor after each collapse (``decay ** k`` after the k-th).
        max_rollbacks: stop after this many collapses.
    """

    def __init__(self, *, size: int = 128, steps: int = 5, attack: str = "pgd", drop: float = 0.2,
                 gap: float = 0.3, action: str = "lower", decay: float = 0.8,
                 max_rollbacks: int = 3) -> None:
        self.size, self.steps = check_int("check_size", size), check_int("check_steps", steps)
        self.attack = check_choice("check_attack", attack, tuple(PROBES))
        self.drop, self.gap = check_number("check_drop", drop), check_number("check_gap", gap)
        self.action = check_choice("on_collapse", action, ACTIONS)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.max_rollbacks = check_int("max_rollbacks", max_rollbacks, minimum=0)
        self.reset()

    def reset(self) -> None:
        self.probe_x: Tensor | None = None
        self.probe_y: Tensor | None = None
        self.best: float | None = None

    def observe(self, x: Tensor, y: Tensor) -> None:
        """Keep the first training minibatch seen as the probe."""
        if self.probe_x is None:
            self.probe_x, self.probe_y = x[: self.size].detach().clone(), y[: self.size].clone()

    def check(self, model: nn.Module, threat: ThreatModel, generator: torch.Generator,
              train_attack: Callable[[Tensor, Tensor], Tensor]) -> tuple[dict[str, float], str | None]:
        """Probe metrics (``probe_pgd_acc`` or ``probe_apgd_acc``, see :data:`PROBES`, and
        ``probe_train_attack_acc``) and the collapse description (or None); updates the best
        probe accuracy. ``train_attack(x, y) -> x_adv`` is the objective's own attack at full eps."""
        if self.probe_x is None or self.probe_y is None:
            return {}, None
        device = next(model.parameters()).device  # a resumed probe comes back on the CPU
        x, y = self.probe_x.to(device), self.probe_y.to(device)
        x_probe = self._probe(model, x, y, threat, generator)
        accuracy, single = (_accuracy(model, x_adv, y) for x_adv in (x_probe, train_attack(x, y)))
        metrics = {PROBES[self.attack]: accuracy, "probe_train_attack_acc": single}
        name = self.attack.upper()
        if self.best is not None and accuracy < self.best - self.drop:
            return metrics, (f"{name} accuracy on a training minibatch fell from {self.best:.3f} "
                             f"to {accuracy:.3f}")
        if single - accuracy > self.gap:
            return metrics, (f"the training attack leaves {single:.3f} accuracy on a training "
                             f"minibatch but {name} only {accuracy:.3f}")
        self.best = accuracy if self.best is None else max(self.best, accuracy)
        return metrics, None

    def _probe(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
               generator: torch.Generator) -> Tensor:
        """The probe attack's adversarial examples ``(B, ...)``."""
        if self.attack == "apgd-ce":
            return apgd(model, x, y, threat, loss="ce", steps=self.steps, generator=generator)
        return pgd(model, x, y, threat, steps=self.steps, step_size=threat.eps / 4,
                   random_start=True, generator=generator)

    def remedy(self, count: int) -> float | None:
        """The step-size factor after the ``count``-th collapse, or ``None`` to stop."""
        if self.action == "stop" or count > self.max_rollbacks:
            return None
        return self.decay ** count

    def state_dict(self) -> dict[str, Any]:
        return {"probe_x": self.probe_x, "probe_y": self.probe_y, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probe_x, self.probe_y, self.best = state["probe_x"], state["probe_y"], state["best"]


WATCH_OPTIONS = ("check_size", "check_steps", "check_attack", "check_drop", "check_gap",
                 "on_collapse", "decay", "max_rollbacks")


def watch_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The collapse-watch options (:data:`WATCH_OPTIONS`) among a fast objective factory's
    ``arguments`` (its ``locals()`` on entry), for :func:`watch_from` and its settings."""
    return {name: arguments[name] for name in WATCH_OPTIONS}


def watch_from(check: bool, options: dict[str, Any]) -> CollapseWatch | None:
    """The collapse watch of a fast objective from its factory's ``check_*``, ``on_collapse``,
    ``decay`` and ``max_rollbacks`` options, or None when ``check`` is off."""
    if not check:
        return None
    return CollapseWatch(size=options["check_size"], steps=options["check_steps"],
                         attack=options["check_attack"], drop=options["check_drop"],
                         gap=options["check_gap"], action=options["on_collapse"],
                         decay=options["decay"], max_rollbacks=options["max_rollbacks"])


def _accuracy(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    with model_guard(model):
        return (predict(model, x_adv).argmax(dim=1) == y).float().mean().item()
