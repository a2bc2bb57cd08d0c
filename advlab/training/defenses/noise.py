"""Random-noise augmentation: the baseline that adversarial training is contrasted with.

Goodfellow, Shlens & Szegedy (2015, Sec. 6) compare FGSM training with training on random
perturbations of the same size, which barely helps against adversarial examples: in high
dimension a random direction is almost orthogonal to the gradient (Fawzi et al. 2016 quantify
it: random noise must be about ``sqrt(d)`` times larger than an adversarial perturbation).

The noise is drawn by :func:`advlab.attacks.noise.random_noise` (one sampler for the library).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_choice, check_number
from advlab.attacks.noise import DISTRIBUTIONS as NOISE_DISTRIBUTIONS
from advlab.attacks.noise import random_noise
from advlab.training.defenses._base import Defense, frozen_bn_stats
from advlab.training.protocol import ObjectiveOutput, register_objective, unwrap_model

#: ``uniform`` is the old name of ``cube`` (uniform in ``[-sigma, sigma]^d``).
ALIASES = {"uniform": "cube"}
DISTRIBUTIONS = (*NOISE_DISTRIBUTIONS, *ALIASES)


@register_objective("noise",
                    description="random-noise augmentation (Gaussian or uniform), the baseline")
class Noise(Defense):
    """Cross-entropy on ``x + n`` clipped to [0, 1] (``clip=False``: not clipped), with ``n`` from
    :func:`~advlab.attacks.noise.random_noise`: ``"cube"`` (alias ``"uniform"``) is uniform in
    ``[-sigma, sigma]^d`` (Goodfellow et al.'s comparison with sigma = eps = 0.25 on MNIST);
    ``"gaussian"`` (the default) is ``N(0, sigma^2 I)``; ``"sphere"`` and ``"ball"`` are that
    module's L2 laws at radius ``sigma * sqrt(d)``, the typical norm of ``N(0, sigma^2 I)`` noise
    in ``d`` dimensions. ``clean_weight`` mixes in the clean loss as FGSM-mix does.

    The noisy batch's logits give ``train_adv_acc`` (accuracy on the training perturbations);
    with ``clean_weight > 0`` the clean ones give ``train_acc``. BatchNorm running statistics
    follow the noisy batches unless ``clean_weight > 0`` (then the clean ones).

    ``clip=False`` trains on ``x + n`` outside the data bounds too, as Cohen, Rosenfeld & Kolter
    (2019) do: the base classifier then sees the same noise that randomized smoothing certifies
    with (:func:`advlab.certify.smooth_certify` does not clip).
    """

    def __init__(self, *, sigma: float = 0.25, distribution: str = "gaussian",
                 clean_weight: float = 0.0, clip: bool = True) -> None:
        super().__init__()
        self.sigma = check_number("sigma", sigma)
        check_choice("distribution", distribution, DISTRIBUTIONS)
        if not 0.0 <= clean_weight < 1.0:
            raise ValueError(f"clean_weight must lie in [0, 1), got {clean_weight}")
        if not isinstance(clip, bool):
            raise TypeError(f"clip must be True or False, got {clip!r}")
        self.distribution, self.clean_weight, self.clip = distribution, float(clean_weight), clip
        self.settings = {"sigma": self.sigma, "distribution": distribution,
                         "clean_weight": self.clean_weight, "clip": clip}

    def perturb(self, x: Tensor) -> Tensor:
        """``x`` plus noise from the objective's generator, clipped to [0, 1] unless
        ``clip=False``: ``(B, ...)``.

        ``"gaussian"`` is i.i.d. ``N(0, sigma^2)`` per coordinate (the law randomized smoothing
        certifies; Cohen et al. 2019); the other laws come from
        :func:`~advlab.attacks.noise.random_noise`.
        """
        generator = self.generator_for(x)
        law = ALIASES.get(self.distribution, self.distribution)
        if law == "gaussian":
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            noisy = x + noise * self.sigma
            return noisy.clamp(0.0, 1.0) if self.clip else noisy
        if law == "cube":
            norm, radius = "linf", self.sigma
        else:
            norm, radius = "l2", self.sigma * math.sqrt(x[0].numel())
        bounds = (0.0, 1.0) if self.clip else (-math.inf, math.inf)
        return random_noise(x, norm, radius, distribution=law, bounds=bounds, generator=generator)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        x_noisy = self.perturb(x)
        if self.clean_weight == 0.0:
            noisy_logits = model(x_noisy)  # (B, K)
            return ObjectiveOutput(F.cross_entropy(noisy_logits, y), None, noisy_logits)
        logits = model(x)  # (B, K)
        with frozen_bn_stats(unwrap_model(model)):
            noisy_logits = model(x_noisy)
        loss = (self.clean_weight * F.cross_entropy(logits, y)
                + (1 - self.clean_weight) * F.cross_entropy(noisy_logits, y))
        return ObjectiveOutput(loss, logits, noisy_logits)
