"""Sanity checks that catch unreliable robustness numbers, each a flag that explains itself.

The checks follow the advice of Athalye, Carlini & Wagner (2018, "Obfuscated Gradients Give a
False Sense of Security"), Carlini et al. (2019, "On Evaluating Adversarial Robustness") and
Croce & Hein (2020, AutoAttack): gradient masking shows up as zero/NaN gradients, as black-box
attacks beating white-box ones, as robust accuracy that does not fall with eps, and as a huge eps
that does not drive accuracy to zero. :data:`FLAGS` documents every flag in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from advlab._predicates import looks_like_probabilities
from advlab.attacks._core import input_grad, model_guard
from advlab.attacks.losses import ce_loss, cw_loss

#: code -> (what it means, what to do). The single place where flags are documented.
FLAGS: dict[str, tuple[str, str]] = {
    "randomized": (
        "Two forward passes on the same input gave different outputs: the model is randomised "
        "(dropout left on, random input transforms, noise layers).",
        "Every prediction (clean and adversarial) was decided by a majority vote over several "
        "seeded draws, the expected accuracy over draws is reported with its interval, and the "
        "gradient attacks followed the expectation over 20 passes (EOT, Athalye et al. 2018). "
        "Report the robust accuracy of the deployed randomised model and prefer 'thorough'."),
    "probabilities": (
        "The model's outputs are non-negative and sum to one: it returns probabilities, not logits.",
        "Remove the final softmax. Saturated probabilities hide gradients; the margin/DLR losses "
        "and the black-box attack were used, but logits give a more reliable evaluation."),
    "zero_gradients": (
        "The input gradient of the loss is exactly zero on many correctly classified points "
        "(shattered gradients: quantisation, thresholds, argmax or saturated layers).",
        "If the margin-loss gradient is zero too (shattered gradients), the gradient attacks were "
        "re-run with straight-through backward passes (BPDA, see 'unavailable_gradients'); where "
        "those give no gradient either, the black-box Square attack ran with its full budget. Give evaluate(..., surrogate=model) a "
        "differentiable stand-in for a better BPDA. If only the CE gradient is zero, the softmax "
        "saturates: the DLR attacks do not saturate and handle it."),
    "nan_gradients": (
        "The input gradient contains NaN or inf on some points.",
        "Fix the numerics of the model (log of zero, division by zero); attacks skip such steps."),
    "vanishing_gradients": (
        "The input gradient is tiny (below 1e-8 in L1 norm) on many points: the loss saturates.",
        "Scale-invariant losses (DLR, margin) and the black-box attack were used; check for a "
        "temperature or softmax inside the model."),
    "blackbox_stronger": (
        "The black-box attack broke points that every white-box attack failed on.",
        "A sign of gradient masking: white-box gradients are misleading for this model. Trust the "
        "worst case (which already includes those points) and investigate the gradients."),
    "not_monotone": (
        "At a larger eps the attacks broke fewer points than at a smaller eps before pooling.",
        "Attacks are not finding the worst case reliably. The reported curve pools adversarial "
        "examples across eps (monotone by construction); raise steps/restarts ('thorough')."),
    "large_eps_not_broken": (
        "At a very large eps (where any input can be reached) accuracy did not drop to ~0: the "
        "unconstrained-attack failure of Pintor et al. (2022).",
        "The attacks cannot make progress: gradient masking or a bug in the model's input "
        "handling. The reported robust accuracy is an upper bound that is probably too high."),
    "chance_accuracy": (
        "Clean accuracy is at or below chance level.",
        "The model is not trained (or labels and inputs do not match); robust accuracy means "
        "nothing here. Check the dataset, the normalisation and the checkpoint."),
    "unavailable_gradients": (
        "The margin-loss gradient is zero, NaN or tiny on many points: gradient attacks have "
        "nothing to follow (Pintor et al. 2022's unavailable-gradients indicator).",
        "The detail says what was done: the gradient attacks re-run on a straight-through BPDA "
        "version of the model (round, floor, ceil, trunc, sign and thresholds get an identity "
        "backward pass, the forward stays exact, every candidate is verified on the real model; "
        "their breaks are listed as bpda-*). Pass evaluate(..., surrogate=...) (a differentiable "
        "stand-in, e.g. nn.Sequential(smooth_preprocessing, classifier)) for a closer BPDA."),
    "silent_success": (
        "The first attack visited an adversarial point inside the threat model but returned a "
        "non-adversarial one (Pintor et al. 2022).",
        "The attack does not keep its best point: fix the attack (keep any successful iterate) "
        "or use the library's attacks; the reported robust accuracy is too high."),
    "incomplete_optimization": (
        "On many points the first attack did not break, its best loss was still improving over "
        "its last steps (Pintor et al. 2022).",
        "More steps would likely break more points: raise steps (the 'standard' or 'thorough' "
        "preset, or steps= in a custom AttackStep)."),
    "transfer_failure": (
        "Many examples crafted on a stand-in (a surrogate model) fooled the stand-in but not the "
        "evaluated model (Pintor et al. 2022).",
        "The surrogate is a poor stand-in for this model: its transfer step says little. Use a "
        "surrogate closer to the model (e.g. the model with a smooth approximation of its "
        "non-differentiable part) or rely on the BPDA and black-box steps."),
}

#: Flags raised before the attacks that point to gradient masking on their own: the ``standard``
#: preset then runs its black-box attack with the full query budget on every point still robust
#: (as it does when :func:`gradient_flags` finds the margin-loss gradient masked). A randomised
#: model is not in it: its gradient attacks use EOT and its predictions a vote over draws, and the
#: black-box probe escalates only where it broke a point (AutoAttack-rand runs no black box).
MASKING = frozenset({"probabilities"})


@dataclass(frozen=True)
class Flag:
    """A raised sanity flag: its code, what was measured, and the documented explanation."""

    code: str
    detail: str

    @property
    def meaning(self) -> str:
        return FLAGS[self.code][0]

    @property
    def advice(self) -> str:
        return FLAGS[self.code][1]

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "meaning": self.meaning, "advice": self.advice}

    def __str__(self) -> str:
        return f"[{self.code}] {self.detail} -- {self.meaning} {self.advice}"


def is_randomized(model: nn.Module, x: Tensor) -> bool:
    """True when two forward passes on the same inputs differ (in the model's eval mode)."""
    with model_guard(model), torch.no_grad():
        first, second = model(x), model(x)
    return not torch.allclose(first, second, rtol=1e-5, atol=1e-6)


outputs_are_probabilities = looks_like_probabilities  # the old name, kept for one release


def _gradient_shares(model: nn.Module, x: Tensor, y: Tensor, loss) -> tuple[Tensor, Tensor, Tensor]:
    """Per point: non-finite, exactly zero and tiny (L1 < 1e-8) input gradients of ``loss``."""
    with model_guard(model):
        grad, _, _ = input_grad(model, x, y, loss)
    flat = grad.reshape(len(x), -1)
    nonfinite = ~torch.isfinite(flat).all(dim=1)
    l1 = flat.nan_to_num(0.0).abs().sum(dim=1)
    return nonfinite, (l1 == 0) & ~nonfinite, (l1 > 0) & (l1 < 1e-8)


def gradient_flags(model: nn.Module, x: Tensor, y: Tensor, threshold: float = 0.2
                   ) -> tuple[list[Flag], bool]:
    """Flags for zero, NaN and vanishing input gradients of the CE loss on ``x`` ``(B, ...)``,
    and whether the gradients are *masked*.

    A softmax that saturates in float32 zeroes the CE gradient of a confident model without
    hiding anything: the scale-invariant margin loss ``max_{j!=y} z_j - z_y`` still has a
    gradient there, and the DLR attacks use it. The gradients count as masked only when the
    margin gradient is also zero, NaN or tiny on at least ``threshold`` of the points
    (shattered gradients: quantisation, thresholds) -- then the black-box attack gets its full
    budget.
    """
    if len(x) == 0:
        return [], False
    nonfinite, zero, tiny = _gradient_shares(model, x, y, ce_loss)
    flags = []
    for code, mask in (("nan_gradients", nonfinite), ("zero_gradients", zero),
                       ("vanishing_gradients", tiny)):
        share = mask.float().mean().item()
        if share >= (0.0 if code == "nan_gradients" else threshold) and mask.any():
            flags.append(Flag(code, f"{share:.0%} of {len(x)} checked points"))
    if not flags:
        return flags, False
    m_nonfinite, m_zero, m_tiny = _gradient_shares(model, x, y, cw_loss)
    masked_share = (m_nonfinite | m_zero | m_tiny).float().mean().item()
    masked = masked_share >= threshold or bool(m_nonfinite.any())
    note = ("; the margin-loss gradient is masked too on "
            f"{masked_share:.0%}: full black-box budget") if masked else \
        f"; the margin-loss gradient is fine on {1 - masked_share:.0%} (saturated softmax)"
    return [Flag(f.code, f.detail + note) for f in flags], masked


def chance_flag(clean_accuracy: float, num_classes: int, n: int) -> list[Flag]:
    """Flag clean accuracy at most chance plus two binomial standard errors."""
    chance = 1.0 / max(num_classes, 1)
    margin = 2 * (chance * (1 - chance) / max(n, 1)) ** 0.5
    if n and clean_accuracy <= chance + margin:
        return [Flag("chance_accuracy", f"clean accuracy {clean_accuracy:.1%} vs chance {chance:.1%}")]
    return []
