"""``advlab evaluate``: robust accuracy per eps, per attack and worst case, sanity flags and the
verdict (``reliable`` or ``suspicious: <flag codes>``).

    advlab evaluate runs/x --norm linf --eps 0.05 0.1 0.2 --preset standard --points 1000
    advlab evaluate mynet.py:Net --weights w.safetensors --data mine.npz --eps 0.03
    advlab evaluate scripted.pt --dataset cifar10 --mean 0.49 0.48 0.45 --std 0.25 0.24 0.26
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    setup_logging,
)


def evaluate(
    run: Annotated[str | None, typer.Argument(metavar="MODEL", help=MODEL_HELP)] = None,
    model_file: Annotated[Path | None, typer.Option(help="Older spelling of MODEL.")] = None,
    weights: WeightsOption = None,
    model_args: ModelArgsOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    imports: ImportOption = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the run's).")] = None,
    data: DataOption = None,
    image_size: ImageSizeOption = None,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    eps: Annotated[list[float], typer.Option(help="One or more radii: --eps 0.05 0.1 0.2.")] = [0.1],  # noqa: B006
    preset: Annotated[str, typer.Option(help="fast, standard or thorough.")] = "standard",
    points: Annotated[int, typer.Option("--points", "--n", help="Number of test points (--n is an alias; under torchrun write --points: torchrun takes --n for a prefix of its own options).")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Attack batch size.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the attacks and of the test subset.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset files are.")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file for the records (default: in the run directory).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Evaluate robust accuracy: the per-sample worst case over an attack ensemble."""
    setup_logging()
    import json

    from advlab import ThreatModel
    from advlab._utils import atomic_write
    from advlab.cli._runs import load_run, test_points
    from advlab.evaluation import evaluate as run_evaluation
    from advlab.store import Store

    ctx = load_run(run, model_file=model_file, dataset=dataset, data_dir=data_dir, device=device,
                   model_options=model_options(weights, model_args, mean, std, imports),
                   data=data, image_size=image_size)
    x, y = test_points(ctx, points, seed=seed)
    threat = ThreatModel(norm, max(eps))
    total = _progress_total(ctx.model, x, preset, threat.norm, len(eps))
    with Store(ctx.store_path) as store, attack_progress(enabled=progress, total=total) as tick:
        results = run_evaluation(ctx.model, x, y, threat, eps=eps, attacks=preset, seed=seed,
                                 batch_size=batch_size, progress=tick, store=store, run_name=ctx.name)
    for r in results:  # what the points are: "test" only for a split the model never saw
        r.extras["points"] = "test" if ctx.split_label == "test" else ctx.split_note
    _print_table(results, ctx.split_label, ctx.split_note)
    target = out or ctx.run_dir / f"evaluate-{threat.norm}-{preset}.json"
    text = json.dumps([r.to_dict() for r in results], indent=2)
    atomic_write(target, lambda fh: fh.write(text), mode="w")
    echo(f"\nstored in {ctx.store_path} (evaluation ids {[r.extras['store_id'] for r in results]}) and {target}")


def _progress_total(model, x, preset: str, norm: str, n_eps: int) -> int | None:
    """Upper bound of the attack work in points (every attack on every point at every eps)."""
    import torch

    from advlab.evaluation.presets import resolve_ensemble
    from advlab.models.user import unwrap_logits

    try:
        with torch.no_grad():
            classes = unwrap_logits(model(x[:1])).shape[1]
        return len(x) * len(resolve_ensemble(preset, classes, norm)) * n_eps
    except Exception:  # the evaluation itself reports a bad preset clearly
        return None


def _print_table(results: list, label: str = "test", note: str = "") -> None:
    first = results[0]
    what = f"{label} points" if label == "test" else f"{label} ({note})"
    echo(f"{first.n} {what}, preset {first.preset}, seed {first.seed}, clean accuracy "
         f"{first.clean_accuracy:.1%}", bold=True)
    names = list(first.per_attack)
    echo(f"{'eps':>8} {'robust':>8} " + " ".join(f"{n:>9}" for n in names) + f" {'time':>8}")
    for r in results:
        breaks = " ".join(f"{int(r.per_attack[n]['breaks']):>9}" for n in names)
        spent = sum(v["time_s"] for v in r.per_attack.values())
        echo(f"{r.eps:>8.4g} {r.robust_accuracy:>8.1%} {breaks} {spent:>7.1f}s")
    for flag in first.warnings:
        echo(f"\nflag [{flag['code']}] {flag['detail']}", fg="yellow")
        echo(f"  {flag['meaning']}\n  {flag['advice']}")
    echo(f"\nverdict: {first.verdict}", bold=True, fg=None if first.verdict == "reliable" else "yellow")
