"""Random-noise augmentation: the baseline that adversarial training is contrasted with.

Goodfellow, Shlens & Szegedy (2015, Sec. 6) compare FGSM training with training on random
perturbations of the same size, which barely helps against adversarial examples: in high
dimension a random direction is almost orthogonal to the gradient (Fawzi et al. 2016 quantify
it: random noise must be about ``sqrt(d)`` times larger than an adversarial perturbation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.training.defenses._base import Defense, check_positive, frozen_bn_stats
from advlab.training.objectives import ObjectiveOutput, register_objective, unwrap_model

DISTRIBUTIONS = ("gaussian", "uniform")


@register_objective("noise")
class Noise(Defense):
    """Cross-entropy on ``clip(x + n, 0, 1)`` with ``n ~ N(0, sigma^2 I)`` (``"gaussian"``) or
    uniform in ``[-sigma, sigma]^d`` (``"uniform"``, Goodfellow et al.'s comparison with
    sigma = eps = 0.25 on MNIST). ``clean_weight`` mixes in the clean loss as FGSM-mix does.

    The noisy batch's logits give ``train_adv_acc`` (accuracy on the training perturbations);
    with ``clean_weight > 0`` the clean ones give ``train_acc``. BatchNorm running statistics
    follow the noisy batches unless ``clean_weight > 0`` (then the clean ones).
    """

    def __init__(self, *, sigma: float = 0.25, distribution: str = "gaussian",
                 clean_weight: float = 0.0) -> None:
        super().__init__()
        self.sigma = check_positive("sigma", sigma)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                             f"got {distribution!r}")
        if not 0.0 <= clean_weight < 1.0:
            raise ValueError(f"clean_weight must lie in [0, 1), got {clean_weight}")
        self.distribution, self.clean_weight = distribution, float(clean_weight)
        self.settings = {"sigma": self.sigma, "distribution": distribution,
                         "clean_weight": self.clean_weight}

    def sample(self, x: Tensor) -> Tensor:
        """A noise tensor shaped like ``x`` from the objective's generator."""
        generator = self.generator_for(x)
        if self.distribution == "gaussian":
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return noise * self.sigma
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (noise * 2 - 1) * self.sigma

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        x_noisy = (x + self.sample(x)).clamp(0.0, 1.0)
        if self.clean_weight == 0.0:
            noisy_logits = model(x_noisy)  # (B, K)
            return ObjectiveOutput(F.cross_entropy(noisy_logits, y), None, noisy_logits)
        logits = model(x)  # (B, K)
        with frozen_bn_stats(unwrap_model(model)):
            noisy_logits = model(x_noisy)
        loss = (self.clean_weight * F.cross_entropy(logits, y)
                + (1 - self.clean_weight) * F.cross_entropy(noisy_logits, y))
        return ObjectiveOutput(loss, logits, noisy_logits)
