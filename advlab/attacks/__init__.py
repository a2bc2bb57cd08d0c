"""Adversarial attacks: plain functions ``attack(model, x, y, threat, **options)``.

``y`` is always the true label; targeted attacks (fgsm/fgm, pgd, apgd, fab, square, cw) take the
classes to reach as ``target=`` (``(B,)`` int64), and the AutoAttack sweeps of apgd and fab
over the most likely wrong classes are ``target="top"``. Every attack leaves ``x`` and the model untouched (mode
and ``requires_grad`` restored), returns a result inside the threat model and the bounds, and is
reproducible through ``generator=``: a ``torch.Generator``, or :class:`advlab.streams.PointStreams`
(one stream per sample, so a sample's random draws do not depend on its batch). Per-input attacks return ``x_adv``, or with
``return_info=True`` one :class:`AttackResult`. See :mod:`advlab.attacks._core` for the shared
contract and :data:`ATTACKS` for the registry.
"""

from __future__ import annotations

from advlab.attacks._core import AttackInputError, model_guard
from advlab.attacks.apgd import apgd  # noqa: E402
from advlab.attacks.cw import cw  # noqa: E402
from advlab.attacks.deepfool import deepfool  # noqa: E402
from advlab.attacks.fab import fab  # noqa: E402
from advlab.attacks.fgsm import fgm, fgsm  # noqa: E402
from advlab.attacks.fmn import fmn  # noqa: E402
from advlab.attacks.losses import get_loss
from advlab.attacks.noise import noise, random_noise  # noqa: E402
from advlab.attacks.occlusion import occlusion, occlusion_accuracy  # noqa: E402
from advlab.attacks.patch import eyeglass_mask, masked_pgd, patch  # noqa: E402
from advlab.attacks.patch_threat import MaskThreat, PatchThreat  # noqa: E402
from advlab.attacks.pgd import pgd  # noqa: E402
from advlab.attacks.registry import ATTACKS, get_attack, register_attack
from advlab.attacks.result import AttackResult, MinimalNormResult
from advlab.attacks.spatial import spatial  # noqa: E402
from advlab.attacks.square import square  # noqa: E402
from advlab.attacks.universal import universal  # noqa: E402

__all__ = ["ATTACKS", "AttackInputError", "AttackResult", "MaskThreat", "MinimalNormResult", "PatchThreat",
           "apgd", "cw", "deepfool", "eyeglass_mask", "fab", "fgm", "fgsm", "fmn", "get_attack", "get_loss",
           "masked_pgd", "model_guard", "noise", "occlusion", "occlusion_accuracy", "patch", "pgd",
           "random_noise", "register_attack", "spatial", "square", "universal"]
