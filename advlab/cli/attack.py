"""``advlab attack``: run one attack on a run's test points and save the adversarial examples.

    advlab attack runs/x --attack deepfool --out adv.npz
    advlab attack runs/x --attack pgd --norm linf --eps 0.1 --param steps=40 --param random_start=true
    advlab attack exported.pt2 --dataset digits --attack fgsm --eps 0.1
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import (
    MODEL_HELP,
    DataOption,
    ImageSizeOption,
    ImportOption,
    MeanOption,
    ModelArgsOption,
    StdOption,
    WeightsOption,
    echo,
    model_options,
    parse_key_values,
    setup_logging,
)


def attack(
    run: Annotated[str | None, typer.Argument(metavar="MODEL", help=MODEL_HELP)] = None,
    weights: WeightsOption = None,
    model_args: ModelArgsOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    imports: ImportOption = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the run's).")] = None,
    data: DataOption = None,
    image_size: ImageSizeOption = None,
    attack_name: Annotated[str, typer.Option("--attack", help="Attack name (advlab info lists them).")] = "pgd",
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    eps: Annotated[float, typer.Option(help="Radius (bounded and universal attacks).")] = 0.1,
    points: Annotated[int, typer.Option("--points", "--n", help="Number of test points (--n is an alias; under torchrun write --points).")] = 256,
    param: Annotated[list[str], typer.Option(help="Attack option key=value (repeatable).")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="Seed of the attack and of the test subset.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset files are.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output .npz (default: <run>/adv-<attack>.npz).")] = None,
) -> None:
    """Run one attack on the model's test points; print success and perturbation statistics."""
    setup_logging()
    import numpy as np
    import torch

    from advlab import ThreatModel
    from advlab._utils import atomic_write
    from advlab.attacks import get_attack
    from advlab.attacks.registry import ATTACK_KINDS
    from advlab.cli._runs import load_run, test_points
    from advlab.store import Store

    ctx = load_run(run, dataset=dataset, data_dir=data_dir, device=device,
                   model_options=model_options(weights, model_args, mean, std, imports),
                   data=data, image_size=image_size)
    fn = get_attack(attack_name, **parse_key_values(param))
    kind = ATTACK_KINDS[attack_name.replace("-", "_").lower()]
    x, y = test_points(ctx, points, seed=seed)
    threat = ThreatModel(norm, eps)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    start = time.perf_counter()
    if kind == "minimal":
        x_adv = fn(ctx.model, x, y, norm=threat.norm, generator=generator)
    elif kind == "universal":
        x_adv = threat.clip(x + fn(ctx.model, x, y, threat, generator=generator))
    elif kind == "spatial":
        x_adv = fn(ctx.model, x, y, None, generator=generator)
    elif kind == "patch":  # occlusion, patch: the square is the threat (--param size=8)
        x_adv = fn(ctx.model, x, y, generator=generator)
    else:
        x_adv = fn(ctx.model, x, y, threat, generator=generator)
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        clean_pred, adv_pred = ctx.model(x).argmax(1), ctx.model(x_adv).argmax(1)
    stats = _statistics(x, x_adv, y, clean_pred, adv_pred, threat.norm, elapsed)
    if ctx.split_label != "test":
        echo(f"points: {ctx.split_note}", fg="yellow")
    for key, value in stats.items():
        echo(f"{key:<22} {value:.4g}" if isinstance(value, float) else f"{key:<22} {value}")
    target = out or ctx.run_dir / f"adv-{attack_name}.npz"
    arrays = {"x": x.cpu().numpy(), "x_adv": x_adv.cpu().numpy(), "y": y.cpu().numpy(),
              "pred_clean": clean_pred.cpu().numpy(), "pred_adv": adv_pred.cpu().numpy()}
    atomic_write(target, lambda fh: np.savez_compressed(fh, **arrays))
    params = {"attack": attack_name, "kind": kind, "norm": threat.norm, "eps": eps, "n": len(x),
              "seed": seed, "options": parse_key_values(param)}
    with Store(ctx.store_path) as store:
        store.add_evaluation(ctx.name, "attack", params, stats)
    echo(f"saved {target}; stored in {ctx.store_path}")


def _statistics(x, x_adv, y, clean_pred, adv_pred, norm: str, elapsed: float) -> dict[str, Any]:
    from advlab.threat import lp_norm

    correct = clean_pred == y
    fooled = correct & (adv_pred != y)
    norms = lp_norm(x_adv - x, norm)[fooled]
    return {
        "points": len(x), "clean_accuracy": correct.float().mean().item(),
        "adversarial_accuracy": (adv_pred == y).float().mean().item(),
        "success_rate": (fooled.sum() / correct.sum().clamp_min(1)).item(),
        f"median_{norm}": norms.median().item() if len(norms) else float("nan"),
        f"mean_{norm}": norms.mean().item() if len(norms) else float("nan"),
        "time_s": elapsed,
    }
