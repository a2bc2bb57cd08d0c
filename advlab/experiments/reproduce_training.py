"""Reproductions of the training and theory results of the seed material.

FGSM adversarial training (Goodfellow, Shlens & Szegedy 2015, the slides' FGSM-mix), one-step
attacks on random ReLU networks (Bubeck et al. 2021; Bartlett et al. 2021), the lecture's
spirals, and perceptually aligned gradients of robust models (Ortiz-Jimenez et al.'s review;
Tsipras et al. 2019). Same result dicts as :mod:`advlab.experiments.reproduce_geometry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from advlab.attacks._core import model_guard, predict
from advlab.experiments.reproduce_models import DIGITS, FASHION, PairSpec, model_pair, test_split
from advlab.geometry.stats import difference_interval, paired_ratio, proportion_interval
from advlab.report.plotting import new_figure, save_figure
from advlab.threat import ThreatModel, flat

Result = dict[str, Any]


def goodfellow_fgsm_training(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """FGSM error of a standard and an FGSM-mix trained small_cnn on Fashion-MNIST test points."""
    from advlab.attacks.fgsm import fgsm

    spec = PairSpec(dataset="fashion-mnist", defense="fgsm-mix", defense_params=(("eps", 0.1),),
                    epochs=1, n_train=FASHION.n_train, seed=seed)
    models = model_pair(cache, spec)
    x, y = test_split(spec, 300 if quick else 1000, seed=seed)
    errors = {}
    for label, model in models.items():
        x_adv = fgsm(model, x, y, ThreatModel("linf", 0.1))
        with model_guard(model):
            errors[label] = (predict(model, x_adv).argmax(1) != y).double()
    (a_label, a), (b_label, b) = errors.items()
    change, ci = difference_interval(a, b, generator=torch.Generator().manual_seed(seed))
    n = len(y)
    details: dict[str, Any] = {label: {"fgsm_error": float(e.mean()), "ci": list(proportion_interval(int(e.sum()), n))}
               for label, e in errors.items()}
    return {"value": change, "ci": list(ci), "n": n,
            "measured": f"FGSM (Linf 0.1) error {a_label} {details[a_label]['fgsm_error']:.1%} "
                        f"[{details[a_label]['ci'][0]:.1%}, {details[a_label]['ci'][1]:.1%}] -> {b_label} "
                        f"{details[b_label]['fgsm_error']:.1%} [{details[b_label]['ci'][0]:.1%}, "
                        f"{details[b_label]['ci'][1]:.1%}]; paired change {change:+.1%} "
                        f"[{ci[0]:+.1%}, {ci[1]:+.1%}], n = {n}",
            "agrees": True if ci[1] < 0 else (False if ci[0] > 0 else None),
            "details": details, "figures": {}, "captions": {}}


def random_relu(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """One gradient step flips wide random ReLU networks; a narrow bottleneck is outside the theorem."""
    from advlab.experiments.random_relu import random_relu_sweep

    result = random_relu_sweep(out / "random_relu", quick=True, input_dims=(100, 1000) if not quick else (100,),
                               widths=((1000,), (1000, 10, 1000)), depths=(1,), samples=50,
                               networks=10, seed=seed)
    wide = [r for r in result["rows"] if r["bottleneck"] == 1000]
    flips = sum(round(r["flip_rate"] * r["samples"]) for r in wide)
    total = sum(r["samples"] for r in wide)
    ci = proportion_interval(flips, total)
    return {"value": flips / total, "ci": list(ci), "n": total,
            "measured": f"flip rate of one gradient step, widths 1000, d >= 100: {flips / total:.3f} "
                        f"[95 % CI {ci[0]:.3f}, {ci[1]:.3f}], n = {total} inputs over "
                        f"{len(wide) * 10} networks",
            "agrees": True if ci[0] > 0.9 else (False if ci[1] < 0.9 else None),
            "details": {"claims": result["claims"], "linearity": result["linearity"]},
            "figures": {k: f"random_relu/{v}" for k, v in result["figures"].items()},
            "captions": result["captions"]}


def spirals(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """An over-parametrised MLP fits noisy spirals labels (islands), a small one stays smooth."""
    from advlab.experiments.spirals import spirals_compare

    result = spirals_compare(out / "spirals", seed=seed, epochs=600 if quick else 1000)
    large = result["large"]
    n = result["params"]["n_samples"]
    gap = large["train_accuracy"] - large["test_accuracy"]
    lo_train, _ = proportion_interval(round(large["train_accuracy"] * n), n)
    _, hi_test = proportion_interval(round(large["test_accuracy"] * n), n)
    return {"value": gap, "ci": [lo_train - hi_test, None], "n": n,
            "measured": f"large MLP train {large['train_accuracy']:.3f} vs test {large['test_accuracy']:.3f} "
                        f"(gap {gap:+.3f}; train lower bound - test upper bound {lo_train - hi_test:+.3f}); "
                        f"small MLP train {result['small']['train_accuracy']:.3f} vs test "
                        f"{result['small']['test_accuracy']:.3f}, n = {n} each",
            "agrees": True if lo_train > hi_test else None,
            "details": {name: {k: result[name][k] for k in ("widths", "train_accuracy", "test_accuracy")}
                        for name in ("small", "large")},
            "figures": {k: f"spirals/{v}" for k, v in result["figures"].items()}, "captions": result["captions"]}


def _gradient_images(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from advlab.geometry.hessian import input_gradient

    return input_gradient(model, x, y)


def perceptual_gradients(out: Path, *, cache: Path, seed: int, quick: bool) -> Result:
    """Input gradients and large-eps targeted PGD images of a standard and a robust model."""
    from advlab.attacks.pgd import pgd

    models = model_pair(cache, DIGITS)
    x, y = test_split(DIGITS, 100 if quick else 300, seed=seed)
    ink = (flat(x) > 0.2).double()  # the strokes of the digit
    share = {}
    grads = {}
    for label, model in models.items():
        g = flat(_gradient_images(model, x, y)).double().pow(2)
        share[label] = (g * ink).sum(1) / g.sum(1).clamp_min(1e-30)  # gradient energy on the strokes
        grads[label] = g
    (a_label, a), (b_label, b) = share.items()
    row = paired_ratio(a, b, generator=torch.Generator().manual_seed(seed))
    target = (y + 1) % 10
    show = 6
    fig, axes = new_figure(show, 2 * len(models) + 1, width=1.3, height=1.4, squeeze=False)
    side = int(round(flat(x).shape[1] ** 0.5))
    images = [("input", x[:show])]
    for label, model in models.items():
        adv = pgd(model, x[:show], y[:show], ThreatModel("l2", 3.0), steps=40, target=target[:show])
        images += [(f"∇ {label}", grads[label][:show].sqrt()), (f"PGD→{label}", adv)]
    for r, (name, batch) in enumerate(images):
        for c in range(show):
            ax = axes[r, c]
            ax.imshow(batch[c].reshape(side, side).detach().cpu().numpy(), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=7)
    path = save_figure(fig, out / "perceptual_gradients.png")
    return {"value": row.ratio, "ci": list(row.ci), "n": row.n,
            "measured": f"share of gradient energy on the digit's strokes, {b_label} / {a_label}: "
                        f"{row.ratio:.3g} [95 % CI {row.ci[0]:.3g}, {row.ci[1]:.3g}], n = {row.n}",
            "agrees": True if row.ci[0] > 1 else (False if row.ci[1] < 1 else None),
            "details": {"median_share": {k: float(v.median()) for k, v in share.items()}},
            "figures": {"perceptual_gradients": path.name},
            "captions": {"perceptual_gradients": (
                f"Rows: test inputs; |input gradient| and targeted L2 PGD (eps 3, 40 steps, target "
                f"y + 1) images of {', '.join(models)}. Robust models' gradients and attacks look "
                "like digits (perceptually aligned gradients).")}}
