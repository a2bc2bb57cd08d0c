"""``advlab attack``: run one attack on a run's test points and save the adversarial examples.

    advlab attack runs/x --attack deepfool --out adv.npz
    advlab attack runs/x --attack pgd --norm linf --eps 0.1 --param steps=40 --param random_start=true
    advlab attack exported.pt2 --dataset digits --attack fgsm --eps 0.1
    torchrun --standalone --nproc_per_node=2 -m advlab attack runs/x --attack pgd --points 1000

The points are attacked in global batches of --batch-size, batch ``b`` with its own generator
seeded from --seed and ``b``; under torchrun the batches are sharded over the ranks (whole
batches) and rank 0 gathers them, prints and writes the outputs once. At one batch size the
adversarial examples are the same for any number of processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    from advlab.training.distributed import setup_distributed, teardown_distributed

    context, resolved = setup_distributed(device)
    try:
        _attack(run, model_options(weights, model_args, mean, std, imports), dataset, data,
                image_size, attack_name, norm, eps, points, param, seed, str(resolved), data_dir,
                out, batch_size, progress, context)
    finally:
        teardown_distributed(context)


def _attack(run, options, dataset, data, image_size, attack_name, norm, eps, points, param, seed,
            device, data_dir, out, batch_size, progress, context) -> None:
    """The command's body on every rank: the batches are sharded, rank 0 alone prints and writes."""
    import numpy as np
    import torch

    from advlab import ThreatModel
    from advlab._utils import atomic_write
    from advlab.attacks import get_attack
    from advlab.attacks.registry import ATTACK_KINDS
    from advlab.cli._runs import load_run, test_points
    from advlab.store import Store

    ctx = load_run(run, dataset=dataset, data_dir=data_dir, device=device, model_options=options,
                   data=data, image_size=image_size)
    fn = get_attack(attack_name, **parse_key_values(param))
    kind = ATTACK_KINDS[attack_name.replace("-", "_").lower()]
    x, y = test_points(ctx, points, seed=seed)
    threat = ThreatModel(norm, eps)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    step = len(x) if kind == "universal" else batch_size
    with attack_progress(attack_name, enabled=progress and context.is_main, total=len(x)) as tick:
        x_adv = sharded_attack(lambda xb, yb, gen: _run_attack(fn, kind, ctx.model, xb, yb, threat, gen),
                               x, y, batch_size=step, seed=seed, context=context,
                               progress=lambda done: tick(attack_name, done))
    elapsed = time.perf_counter() - start
    if not context.is_main:
        return
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
    if context.enabled:
        params["world_size"] = context.world_size
    with Store(ctx.store_path) as store:
        store.add_evaluation(ctx.name, "attack", params, stats)
    echo(f"saved {target}; stored in {ctx.store_path}")


def sharded_attack(run_batch: Callable[[Any, Any, Any], Any], x: Any, y: Any, *, batch_size: int,
                   seed: int, context: Any, progress: Callable[[int], None]) -> Any:
    """``x_adv`` ``(N, ...)`` of ``run_batch(xb, yb, generator)`` over global batches of
    ``batch_size``, whole batches round-robin over the ranks, on rank 0 (None elsewhere).

    Every point draws from its own stream (:class:`advlab.streams.PointStreams`, keyed by the
    seed and the point's global index), so the result depends neither on the number of
    processes nor, up to floating-point rounding, on the batch size (batch-level draws such as a
    universal perturbation's shuffles come from the batch's first stream).
    """
    import torch

    from advlab._dist import gather_objects
    from advlab.streams import PointStreams

    count = -(-len(x) // batch_size)
    chunks: dict[int, Any] = {}
    for round_ in range(-(-count // context.world_size)):
        index = round_ * context.world_size + context.rank
        mine = None
        if index < count:
            part = slice(index * batch_size, (index + 1) * batch_size)
            generator = PointStreams(seed, part.start, len(x[part]), device=x.device)
            try:
                adv = run_batch(x[part], y[part], generator)
                mine = (index, adv.cpu() if context.enabled else adv)  # pickled CUDA tensors keep their device
            except Exception as err:
                if not context.enabled:
                    raise
                mine = (index, f"batch {index} on rank {context.rank}: {err}")  # no rank hangs
        gathered = [item for item in gather_objects(mine, context) if item is not None]
        errors = [item[1] for item in gathered if isinstance(item[1], str)]
        if errors:
            raise RuntimeError("the attack failed on another rank: " + "; ".join(errors))
        if context.is_main:
            chunks.update((i, adv.to(x.device)) for i, adv in gathered)
        progress(sum(len(adv) for _, adv in gathered))
    return torch.cat([chunks[i] for i in range(count)]) if context.is_main else None


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
