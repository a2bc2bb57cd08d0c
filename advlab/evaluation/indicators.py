"""Indicators of attack failure (Pintor et al. 2022, "Indicators of Attack Failure: Debugging and
Improving Optimization of Adversarial Examples", NeurIPS).

The first attack of the ensemble is re-run on a few correctly classified points under a
:class:`Monitor` that watches every forward pass it makes:

* **silent success** -- the attack visited a point inside the threat model that the model
  misclassified, yet returned one that is not adversarial (a bug in how it keeps its best point);
* **incomplete optimisation** -- on the points it did not break, the best margin
  ``max_{j != y} z_j - z_y`` was still rising over the last 20 % of the passes by more than a
  tenth of its whole gain (more steps would break more points).

The other indicators are raised elsewhere: unconstrained-attack failure
(``large_eps_not_broken``, :mod:`advlab.evaluation.evaluate`), transfer failure (candidates
crafted on a stand-in that the model resists, :mod:`advlab.evaluation.ensemble`) and unavailable
gradients (:mod:`advlab.evaluation.adaptive`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard, predict
from advlab.attacks.losses import cw_loss
from advlab.evaluation.presets import AttackFn
from advlab.evaluation.sanity import Flag
from advlab.threat import ThreatModel, flat

#: incomplete optimisation: the last ``LATE_WINDOW`` of the passes gained more than ``LATE_GAIN``
#: of the whole gain on at least ``LATE_SHARE`` of the unbroken points
LATE_WINDOW, LATE_GAIN, LATE_SHARE = 0.2, 0.1, 0.25


class Monitor(nn.Module):
    """``model`` that records the attack's passes on the points ``x`` ``(B, ...)``, ``y`` ``(B,)``.

    Each input row is matched to its nearest clean point. ``visited`` ``(B,)``: a misclassified
    point inside ``threat`` was seen; ``history``: the best margin ``(B,)`` after every pass.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> None:
        super().__init__()
        self.model, self.x, self.y, self.threat = model, x, y, threat
        self.visited = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.best = torch.full((len(x),), float("-inf"), device=x.device)
        self.history: list[Tensor] = []

    def forward(self, inputs: Tensor) -> Tensor:
        logits = self.model(inputs)
        with torch.no_grad():
            rows = flat(inputs.detach())
            index = torch.cdist(rows, flat(self.x)).argmin(dim=1)
            inside = self.threat.contains(self.x[index], inputs.detach())
            margin = cw_loss(logits.detach(), self.y[index])
            wrong = logits.detach().argmax(dim=1) != self.y[index]
            self.visited[index[wrong & inside]] = True
            best = self.best.clone()
            best.scatter_reduce_(0, index[inside], margin[inside], reduce="amax")
            self.best = best
            self.history.append(best)
        return logits


def _incomplete(history: list[Tensor], unbroken: Tensor) -> float:
    """Share of the ``unbroken`` points whose best margin still rose late in the run."""
    if len(history) < 5 or not bool(unbroken.any()):
        return 0.0
    trace = torch.stack(history)[:, unbroken]  # (passes, U)
    start, late, end = trace[0], trace[int((1 - LATE_WINDOW) * (len(trace) - 1))], trace[-1]
    finite = torch.isfinite(start) & torch.isfinite(late)
    total = (end - start).clamp_min(0)
    moving = finite & (total > 1e-3 * (1 + start.abs())) & (end - late > LATE_GAIN * total)
    return moving.float().mean().item()


def indicator_flags(model: nn.Module, name: str, run: AttackFn, x: Tensor, y: Tensor,
                    threat: ThreatModel, *, generator: torch.Generator | None) -> list[Flag]:
    """Re-run the attack ``run`` (named ``name``) on ``x`` ``(B, ...)`` (correct points of a
    deterministic model) under a :class:`Monitor`; flags for silent success and incomplete
    optimisation."""
    if len(x) == 0:
        return []
    monitor = Monitor(model, x, y, threat)
    x_adv = run(monitor, x, y, threat, generator=generator)
    with model_guard(model):
        returned = threat.contains(x, x_adv) & (predict(model, x_adv).argmax(dim=1) != y)
    flags = []
    silent = monitor.visited & ~returned
    if bool(silent.any()):
        flags.append(Flag("silent_success", f"{name} visited adversarial points for "
                          f"{int(silent.sum())} of {len(x)} checked points but returned "
                          "non-adversarial ones"))
    share = _incomplete(monitor.history, ~returned)
    if share >= LATE_SHARE:
        flags.append(Flag("incomplete_optimization", f"{name}: the best margin of {share:.0%} "
                          f"of the {int((~returned).sum())} unbroken checked points still rose over "
                          "the last 20% of its passes"))
    return flags
