"""``advlab geometry``: boundaries, loss landscapes, curvature spectrum and noise ratios of a run.

    advlab geometry runs/x                                  (figures + summary.json in runs/x/geometry)
    advlab geometry runs/x --compare runs/x-pgd             (paired statistics on 100 points)
    torchrun --standalone --nproc_per_node=2 -m advlab geometry runs/x --compare runs/x-pgd

With ``--compare`` the two models are also compared point by point on ``--compare-points`` test
points (default 100) by :func:`advlab.geometry.compare`: per quantity the median of the per-point
ratios with a 95 % paired bootstrap interval, written to ``summary.json["comparison"]``; the
printed text calls a difference one only when the interval excludes 1. Under torchrun the
comparison's points are measured in whole blocks of ``--compare-batch-size`` shared round-robin
by the ranks (every point's random draws seeded from ``--seed`` and its index, so the values are
bit-identical for any number of processes at one block size); rank 0 alone then runs the figure
analysis, prints and writes summary.json and the store row.

Every quantity is measured per test point (:func:`advlab.geometry.analysis.analyse`), written to
``summary.json`` with the figures, and recorded in the store next to the run as a ``geometry``
evaluation.
"""

from __future__ import annotations

import math
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
    seed_everything,
    setup_logging,
    user_errors,
)

#: Test points drawn for the weight-space landscapes (the analysed points are the first of them).
POOL = 128


@user_errors
def geometry(
    run: Annotated[str, typer.Argument(help=MODEL_HELP)],
    compare: Annotated[str | None, typer.Option(
        help="A second model on the same dataset (e.g. adversarially trained): a run, a saved model, TorchScript or .pt2 (--weights and --model-args are MODEL's; --mean/--std apply to both), analysed in the same planes.")] = None,
    weights: WeightsOption = None,
    model_args: ModelArgsOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    imports: ImportOption = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the run's).")] = None,
    data: DataOption = None,
    image_size: ImageSizeOption = None,
    points: Annotated[int, typer.Option(help="Test points analysed for the figures (the same for both models).")] = 8,
    compare_points: Annotated[int, typer.Option(
        help="Test points of the paired comparison with --compare (at least 100 for useful intervals).")] = 100,
    h: Annotated[float, typer.Option("--h", help="Scale (L2, input units) of the finite-difference curvature.")] = 0.5,
    bound_loss: Annotated[str, typer.Option(
        help="Loss of the CURE bounds: ce (flip at CE = log 2) or cw (margin, flip at 0).")] = "ce",
    clip: Annotated[bool, typer.Option("--clip/--no-clip",
                                       help="Noise ratio of the comparison with probes kept in [0, 1] (both are reported).")] = True,
    eigs: Annotated[int, typer.Option(help="Top input-Hessian eigenvalues per point (Lanczos).")] = 20,
    directions: Annotated[int, typer.Option(help="Random directions per point for the noise ratio.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Output folder (default <run>/geometry).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the test points and every random direction.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset files are.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    compare_batch_size: Annotated[int, typer.Option(
        help="Points the paired comparison measures together; under torchrun the ranks take whole blocks.")] = 32,
) -> None:
    """Decision boundaries, loss landscapes, Hessian spectra, CURE bounds and noise ratios."""
    setup_logging()
    from advlab.training.distributed import setup_distributed, teardown_distributed

    context, resolved = setup_distributed(device)
    try:
        _geometry(run, compare, model_options(weights, model_args, mean, std, imports),
                  model_options(None, None, mean, std, imports), dataset=dataset, data=data,
                  image_size=image_size, points=points, compare_points=compare_points, h=h,
                  bound_loss=bound_loss, clip=clip, eigs=eigs, directions=directions, out=out,
                  seed=seed, device=str(resolved), data_dir=data_dir, progress=progress,
                  compare_batch_size=compare_batch_size, context=context)
    finally:
        teardown_distributed(context)


def _geometry(run: str, compare: str | None, options: Any, other_options: Any, *, dataset: Any,
              data: Any, image_size: Any, points: int, compare_points: int, h: float,
              bound_loss: str, clip: bool, eigs: int, directions: int, out: Path | None, seed: int,
              device: str, data_dir: Path | None, progress: bool, compare_batch_size: int,
              context: Any) -> None:
    """The command's body: the comparison on every rank (sharded), the rest on rank 0 alone."""
    import torch
    from tqdm import tqdm

    from advlab.cli._runs import load_run
    from advlab.geometry.analysis import analyse, store_summary
    from advlab.geometry.analysis_steps import STEPS
    from advlab.store import Store

    ctx = load_run(run, dataset=dataset, data_dir=data_dir, device=device, model_options=options,
                   data=data, image_size=image_size)
    models = {ctx.name: ctx.model}
    if compare is not None:
        other = load_run(compare, dataset=dataset, data_dir=data_dir, device=device,
                         model_options=other_options, data=data, image_size=image_size)
        _check_same_dataset(ctx, other)
        models[other.name if other.name != ctx.name else f"{other.name}-compare"] = other.model
    if bound_loss not in ("ce", "cw"):
        raise ValueError(f"--bound-loss must be ce or cw, got {bound_loss!r}")
    if compare is not None and compare_points < 2:
        raise ValueError(f"--compare-points must be at least 2 (100 or more recommended), got {compare_points}")
    comparison = None
    if compare is not None:  # every rank measures its blocks; every rank gets the result
        comparison = _paired_comparison(ctx, models, seed=seed, n=compare_points, h=h, clip=clip,
                                        directions=max(10, directions), batch_size=compare_batch_size)
    if not context.is_main:
        return
    seed_everything(seed)
    x, y = _candidates(ctx, seed, points)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    target = out if out is not None else ctx.run_dir / "geometry"
    bar = tqdm(total=len(STEPS), desc="geometry", unit="step", disable=not progress, leave=False)

    def tick(name: str, done: int, total: int) -> None:
        bar.set_postfix_str(f"done: {name}")
        bar.update(done - bar.n)

    metadata = {"dataset": ctx.dataset, "runs": {label: str(path) for label, path in
                                                 zip(models, [run, compare] if compare else [run])},
                "seed": seed}
    if context.enabled:
        metadata["world_size"] = context.world_size
    summary = analyse(models, x, y, target, points=points, eigs=eigs, directions=directions,
                      generator=generator, progress=tick, train_xy=_training_points(ctx, x, seed),
                      metadata=metadata, h=h, bound_loss=bound_loss, colours=_colours(ctx, models))
    bar.close()
    if comparison is not None:
        _attach_comparison(summary, comparison, target)
    with Store(ctx.store_path) as store:
        record = store_summary(store, ctx.name, summary)
    print_summary(summary)
    echo(f"\n{len(summary.figures)} figures and summary.json in {target}; stored in "
         f"{ctx.store_path} (evaluation id {record})")


def _paired_comparison(ctx: Any, models: dict[str, Any], *, seed: int, n: int, h: float, clip: bool,
                       directions: int, batch_size: int) -> Any:
    """:func:`advlab.geometry.compare` on ``n`` test points (sharded under torchrun)."""
    import torch

    from advlab.geometry.compare import compare

    x, y = _candidates(ctx, seed + 1, n)
    (first_label, first), (second_label, second) = models.items()
    return compare(first, second, x[:n], y[:n], labels=(first_label, second_label), h=h, clip=clip,
                   directions=directions, batch_size=batch_size,
                   generator=torch.Generator(device=x.device).manual_seed(seed))


def _attach_comparison(summary: Any, result: Any, target: Path) -> None:
    """The comparison's rows into ``summary.comparison`` (with the plane rows), then summary.json."""
    from advlab._utils import atomic_write_json
    from advlab.geometry.analysis import plane_rows
    from advlab.geometry.analysis_plane import plane_lines

    summary.comparison = {**result.rows, **plane_rows(summary)}
    summary.params["comparison"] = {**result.params, "points": result.points,
                                    "both_correct": result.both_correct, "labels": list(result.labels)}
    summary.timings["paired comparison"] = sum(result.timings.values())
    summary.metadata["comparison_lines"] = result.lines() + plane_lines(summary)
    atomic_write_json(target / "summary.json", summary.to_dict())


def _colours(ctx: Any, models: dict[str, Any]) -> dict[str, str]:
    """The colour the report gives each model's run (from the store's run names)."""
    from advlab.report.plotting import colours_for, report_run_names
    from advlab.store import Store

    names: list[str] = []
    if ctx.store_path.exists():
        with Store(ctx.store_path) as store:
            names = report_run_names(store)
    return colours_for(models, names)


def _check_same_dataset(ctx: Any, other: Any) -> None:
    from advlab._utils import canonical_name

    if canonical_name(ctx.dataset) != canonical_name(other.dataset):
        raise ValueError(f"--compare needs a run on the same dataset: {ctx.run_dir} was trained on "
                         f"{ctx.dataset!r} but {other.run_dir} on {other.dataset!r}")


def _candidates(ctx: Any, seed: int, points: int) -> tuple[Any, Any]:
    """A seeded random pool of the run's test points (the analysed points come first)."""
    import torch

    from advlab.cli._runs import test_points

    x, y = test_points(ctx, None, seed=seed)
    if points > len(x):
        raise ValueError(f"--points {points} but the {ctx.dataset} test split has {len(x)} points")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    keep = order[:min(len(x), max(POOL, points))].to(x.device)
    return x[keep], y[keep]


def _training_points(ctx: Any, x: Any, seed: int) -> tuple[Any, Any] | None:
    """The training set of 2-D data (spirals, moons), for the decision-region figures."""
    if x[0].numel() != 2:
        return None
    from advlab.data import load_dataset

    data = load_dataset(ctx.dataset, "train", data_dir=ctx.data_dir, seed=ctx.config.get("seed", seed))
    return data.x.to(x.device), data.y.to(x.device)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


#: (aggregate key, column title) of the printed table.
COLUMNS = (("median_deepfool_norm", "DeepFool"), ("rho_adv", "rho_adv"),
           ("median_normalised_curvature", "|κ|·r"), ("median_top_eigenvalue", "top eig"),
           ("median_top_eigenvalue_scale", "top eig@h"),
           ("median_hutchinson_frobenius", "||H||F^2"), ("median_noise_ratio", "noise/adv"))


def print_summary(summary: Any) -> None:
    """Per model: the medians of the main quantities; then the comparison and what was skipped."""
    width = max(12, *(len(label) for label in summary.models))
    echo(f"{summary.points} test points, input dimension d = {summary.input_dim} "
         f"(random/adversarial prediction sqrt(d) = {math.sqrt(summary.input_dim):.3g})", bold=True)
    echo(f"{'model':<{width}} " + " ".join(f"{title:>10}" for _, title in COLUMNS))
    for label in summary.models:
        values = summary.aggregates.get(label, {})
        echo(f"{label:<{width}} " + " ".join(f"{_number(values.get(key)):>10}" for key, _ in COLUMNS))
    echo(f"(medians over {summary.points} points: DeepFool L2 norm, |boundary curvature| x distance, "
         "pointwise and scale-h Hessian top eigenvalue, Hutchinson ||H||_F^2, random-noise / DeepFool "
         "distance; rho_adv = mean ||r|| / ||x||; single-model medians, not a comparison)")
    for line in _comparison_lines(summary):
        echo(f"  {line}")
    bounds = {label: summary.aggregates.get(label, {}).get("fraction_bracketed") for label in summary.models}
    if any(v is not None for v in bounds.values()):
        echo("CURE bounds (" + str(summary.params.get("bound_loss", "ce")) + "): fraction of points with "
             "lower <= DeepFool r* <= upper: " + ", ".join(f"{k} {_number(v)}" for k, v in bounds.items()))
    for name, reason in summary.skipped.items():
        echo(f"skipped {name}: {reason}", fg="yellow")


def _comparison_lines(summary: Any) -> list[str]:
    """The paired comparison's lines (from :func:`advlab.geometry.compare` or the figure points)."""
    if "comparison_lines" in summary.metadata:
        return list(summary.metadata["comparison_lines"])
    from advlab.geometry.analysis_plane import plane_lines

    plane = set(summary.curves.get("eigenvector_plane", {}).get("comparison") or {})
    lines = []
    if summary.comparison:
        first, second = summary.models
        lines.append(f"{second} / {first} on the {summary.points} figure points (95 % paired bootstrap; "
                     "use --compare for 100 points):")
    for name, row in summary.comparison.items():
        if name in plane:
            continue
        lo, hi = row["ci"]
        said = row["verdict"] if row["verdict"] != "lower" and row["verdict"] != "higher" else f"{summary.models[1]} {row['verdict']}"
        lines.append(f"{name}: {_number(row['ratio'])} [{_number(lo)}, {_number(hi)}] n={row['n']}: {said}")
    return lines + plane_lines(summary)
