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
    attack_progress,
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
    batch_size: Annotated[int, typer.Option(help="Points attacked at a time (a universal perturbation is fitted on all of them at once).")] = 128,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar (points, with an ETA).")] = True,
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
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    step = len(x) if kind == "universal" else batch_size
    chunks = []
    with attack_progress(attack_name, enabled=progress, total=len(x)) as tick:
        for first in range(0, len(x), step):
            xb, yb = x[first:first + step], y[first:first + step]
            chunks.append(_run_attack(fn, kind, ctx.model, xb, yb, threat, generator))
            tick(attack_name, len(xb))
    x_adv = torch.cat(chunks)
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


def _run_attack(fn: Any, kind: str, model: Any, x: Any, y: Any, threat: Any, generator: Any) -> Any:
    """The adversarial points of one batch, by the attack's kind."""
    if kind == "minimal":
        return fn(model, x, y, norm=threat.norm, generator=generator)
    if kind == "universal":
        return threat.clip(x + fn(model, x, y, threat, generator=generator))
    if kind == "spatial":
        return fn(model, x, y, None, generator=generator)
    if kind == "patch":  # occlusion, patch: the square is the threat (--param size=8)
        return fn(model, x, y, generator=generator)
    return fn(model, x, y, threat, generator=generator)


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
