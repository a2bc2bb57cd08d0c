"""The analyses of the demo that are not a single library call: each stage runs one analysis
on a model, draws its figure and stores a record that the report renders.

Stages: minimal perturbations (DeepFool statistics), the adversarial-example gallery, the
universal perturbation, the spatial attack, and the headline numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard, predict
from advlab.store import Store
from advlab.threat import ThreatModel

logger = logging.getLogger(__name__)


def _confidences(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    with model_guard(model):
        probs = predict(model, x).softmax(dim=1)
    conf, pred = probs.max(dim=1)
    return pred, conf


def minimal_norm_stage(store: Store, run_name: str, model: nn.Module, x: Tensor, y: Tensor, *,
                       attack: str = "deepfool", norm: str = "l2",
                       generator: torch.Generator | None = None) -> dict[str, Any]:
    """DeepFool statistics: minimal perturbation per point, rho_adv, the implied accuracy curve."""
    from advlab.evaluation.minimal import minimal_norm_statistics

    stats = minimal_norm_statistics(model, x, y, attack=attack, norm=norm, generator=generator)
    record = stats.to_dict()
    store.add_evaluation(run_name, "minimal-norm", {"attack": attack, "norm": norm, "n": len(x)}, record)
    return record


def gallery_stage(store: Store, run_name: str, model: nn.Module, x: Tensor, y: Tensor,
                  class_names: list[str], out_dir: Path, *, eps: float = 0.1, count: int = 4,
                  generator: torch.Generator | None = None) -> dict[str, Any]:
    """The "panda to gibbon" figure: clean image, amplified perturbation, adversarial image."""
    from advlab.attacks.pgd import pgd
    from advlab.report.figures import gallery

    pred, _ = _confidences(model, x)
    index = (pred == y).nonzero().squeeze(1)[:8 * count]  # attack a few, show fooled ones first
    threat = ThreatModel("linf", eps)
    x_adv = pgd(model, x[index], y[index], threat, steps=20, random_start=True, generator=generator)
    fooled_first = torch.argsort((_confidences(model, x_adv)[0] == y[index]).int(), stable=True)[:count]
    x_sel, y_sel, x_adv = x[index][fooled_first], y[index][fooled_first], x_adv[fooled_first]
    index = index[fooled_first]
    p_clean, c_clean = _confidences(model, x_sel)
    p_adv, c_adv = _confidences(model, x_adv)
    path = out_dir / f"gallery-{run_name}.png"
    gallery(x_sel.cpu().numpy(), x_adv.cpu().numpy(), [class_names[i] for i in p_clean.tolist()],
            [class_names[i] for i in p_adv.tolist()], c_clean.tolist(), c_adv.tolist(), path,
            f"{run_name}: PGD-20 with Linf eps={eps:g} (clean | perturbation, amplified | adversarial)")
    fooled = int((p_adv != y_sel).sum())
    result = {"figures": {"gallery": str(path)}, "eps": eps, "fooled": fooled, "shown": len(index),
              "captions": {"gallery": f"{run_name}: {fooled} of {len(index)} images change class under "
                                      f"an imperceptible Linf perturbation of {eps:g}."},
              "summary": f"{run_name}: PGD-20 at Linf eps={eps:g} fools {fooled}/{len(index)} of the shown images."}
    store.add_evaluation(run_name, "gallery", {"eps": eps, "count": count}, result)
    return result


def universal_stage(store: Store, run_name: str, model: nn.Module, x_fit: Tensor, y_fit: Tensor,
                    x_val: Tensor, y_val: Tensor, out_dir: Path, *, norm: str = "linf",
                    eps: float = 0.15, delta: float = 0.2, max_passes: int = 3,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
    """One perturbation for every input (Moosavi-Dezfooli et al. 2017) and its held-out fooling rate."""
    from advlab.attacks.universal import universal

    info = universal(model, x_fit, y_fit, ThreatModel(norm, eps), delta=delta, max_passes=max_passes,
                     x_val=x_val, y_val=y_val, generator=generator, return_info=True)
    v = info.perturbation.detach().cpu()
    path = out_dir / f"universal-{run_name}.png"
    _plot_universal(v, x_val[:3].cpu(), path, f"{run_name}: universal {norm} perturbation, eps={eps:g}")
    rate = info.fooling_rate_val if info.fooling_rate_val is not None else info.fooling_rate
    result = {"norm": norm, "eps": eps, "fooling_rate": info.fooling_rate,
              "fooling_rate_val": info.fooling_rate_val, "passes": info.passes,
              "figures": {"universal": str(path)},
              "captions": {"universal": f"{run_name}: one {norm} perturbation of size {eps:g} changes the "
                                        f"prediction of {rate:.0%} of held-out images."},
              "summary": f"{run_name}: universal perturbation ({norm}, eps={eps:g}) fools {rate:.1%} "
                         f"of held-out points (fitted on {len(x_fit)}, {info.passes} passes)."}
    store.add_evaluation(run_name, "universal", {"norm": norm, "eps": eps, "delta": delta}, result)
    return result


def _plot_universal(v: Tensor, examples: Tensor, path: Path, title: str) -> None:
    from advlab.report.plotting import new_figure, save_figure

    fig, axes = new_figure(ncols=1 + len(examples), width=2.2, height=2.6, squeeze=False)
    scale = max(float(v.abs().max()), 1e-12)
    panels = [(0.5 + 0.5 * v / scale, "perturbation (amplified)")]
    panels += [((e + v).clamp(0, 1), "image + perturbation") for e in examples]
    cmap = "gray" if v.shape[0] == 1 else None
    for ax, (img, caption) in zip(axes[0], panels):
        ax.imshow(np.transpose(img.numpy(), (1, 2, 0)).squeeze(), cmap=cmap, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def spatial_stage(store: Store, run_name: str, model: nn.Module, x: Tensor, y: Tensor, *,
                  max_rotation: float = 30.0, max_translation: float = 0.1,
                  generator: torch.Generator | None = None) -> dict[str, Any]:
    """Accuracy under the worst rotation and translation within the limits (Engstrom et al. 2019)."""
    from advlab.attacks.spatial import spatial

    x_adv = spatial(model, x, y, None, max_rotation=max_rotation, max_translation=max_translation,
                    generator=generator)
    with model_guard(model):
        clean = (predict(model, x).argmax(1) == y).float().mean().item()
        worst = (predict(model, x_adv).argmax(1) == y).float().mean().item()
    result = {"clean_accuracy": clean, "spatial_accuracy": worst,
              "summary": f"{run_name}: accuracy {clean:.1%} -> {worst:.1%} under the worst rotation "
                         f"(±{max_rotation:g}°) and translation (±{100 * max_translation:g}%)."}
    store.add_evaluation(run_name, "spatial", {"max_rotation": max_rotation,
                                               "max_translation": max_translation, "n": len(x)}, result)
    return result
