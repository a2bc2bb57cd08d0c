"""``advlab evaluate``: robust accuracy per eps, per attack and worst case, sanity flags and the
verdict (``reliable`` or ``suspicious: <flag codes>``).

    advlab evaluate runs/x --norm linf --eps 0.05 0.1 0.2 --preset standard --points 1000
    advlab evaluate mynet.py:Net --weights w.safetensors --data mine.npz --eps 0.03
    advlab evaluate scripted.pt --dataset cifar10 --mean 0.49 0.48 0.45 --std 0.25 0.24 0.26
    torchrun --standalone --nproc_per_node=2 -m advlab evaluate runs/x --eps 0.1 --points 1000

The points are evaluated in global batches of --batch-size, each with its own seed (from --seed
and the batch's index), sharded over the ranks under torchrun: at one batch size the result is
the same for any number of processes. Every finished batch is committed to a sidecar file next to
the JSON (``<json>.partial``); after a kill, the same command with --resume continues it.
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
    draws: Annotated[int, typer.Option(help="Randomised models: forward draws per prediction (majority vote).")] = 11,
    eot_samples: Annotated[int, typer.Option(help="Randomised models: passes the gradient attacks average (EOT).")] = 20,
    bpda: Annotated[str, typer.Option(help="Straight-through BPDA: auto (on shattered gradients), on or off.")] = "auto",
    surrogate: Annotated[Path | None, typer.Option(help="A saved differentiable stand-in model for BPDA and a transfer step.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the evaluation a kill interrupted (its <json>.partial file); other model, data, threat or preset is refused.")] = False,
    channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last", help="Attacks in channels_last memory format (verification stays float32 eager); default: on CPU for models with a 2-d max-pool, where it is faster.", show_default=False)] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the attacked model (verification stays eager).")] = False,
    amp: Annotated[str | None, typer.Option("--amp", help="Attacks under autocast: bf16 (CPU, CUDA) or fp16 (CUDA); every example is re-verified in float32.")] = None,
    micro_batch: Annotated[str, typer.Option("--micro-batch", help="Attack passes in chunks of this many points: auto (64 on CPU, one pass on CUDA) or a number (0: one pass).")] = "auto",
) -> None:
    """Evaluate robust accuracy: the per-sample worst case over an attack ensemble."""
    setup_logging()
    from advlab.training.distributed import setup_distributed, teardown_distributed

    context, resolved = setup_distributed(device)
    try:
        _evaluate(run, model_file, weights, model_args, mean, std, imports, dataset, data,
                  image_size, norm, eps, preset, points, batch_size, seed, str(resolved), data_dir,
                  out, progress, resume, dict(channels_last="auto" if channels_last is None else channels_last, compile=compile_model,
                                              amp=amp, micro_batch=_micro_batch(micro_batch)), context, draws, eot_samples, bpda, surrogate)
    finally:
        teardown_distributed(context)


def _micro_batch(value: str) -> int | str:
    """``--micro-batch``: ``auto`` or a count of points (0: one pass)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"--micro-batch takes 'auto' or a number of points, got {value!r}") from None


def _evaluate(run, model_file, weights, model_args, mean, std, imports, dataset, data, image_size,
              norm, eps, preset, points, batch_size, seed, device, data_dir, out, progress,
              resume, kernels, context, draws, eot_samples, bpda, surrogate) -> None:
    """The command's body on every rank: rank 0 alone prints and writes."""
    import json

    from advlab import ThreatModel
    from advlab._utils import atomic_write
    from advlab.cli._runs import load_run, test_points
    from advlab.evaluation import evaluate as run_evaluation
    from advlab.evaluation.evaluate import store_results
    from advlab.evaluation.sanity import is_randomized
    from advlab.store import Store

    choices = {"auto": None, "on": True, "off": False}
    if bpda not in choices:
        raise typer.BadParameter(f"--bpda must be auto, on or off, got {bpda!r}")
    ctx = load_run(run, model_file=model_file, dataset=dataset, data_dir=data_dir, device=device,
                   model_options=model_options(weights, model_args, mean, std, imports),
                   data=data, image_size=image_size)
    stand_in = None
    if surrogate is not None:
        from advlab.cli._common import load_any_model

        stand_in = load_any_model(str(surrogate), device=device)
    x, y = test_points(ctx, points, seed=seed)
    threat = ThreatModel(norm, max(eps))
    target = out or ctx.run_dir / f"evaluate-{threat.norm}-{preset}.json"
    # the batch-wise engine (sharded, resumable) for deterministic models; a randomised model's
    # vote over draws needs all its points in one process
    randomized = is_randomized(ctx.model, x[:16])
    if randomized and (resume or context.world_size > 1):
        raise typer.BadParameter("a randomised model is evaluated in one process and one pass: "
                                 "run it without --resume and without torchrun")
    main = context.is_main
    with attack_progress("points", enabled=progress and main, total=len(x)) as tick:
        results = run_evaluation(ctx.model, x, y, threat, eps=eps, attacks=preset, seed=seed,
                                 batch_size=batch_size, progress=tick, batches=not randomized,
                                 resume=resume,
                                 checkpoint=None if randomized else Path(f"{target}.partial"),
                                 draws=draws, eot_samples=eot_samples, bpda=choices[bpda],
                                 surrogate=stand_in, **kernels)
    if not main:
        return
    for r in results:  # what the points are: "test" only for a split the model never saw
        r.extras["points"] = "test" if ctx.split_label == "test" else ctx.split_note
    with Store(ctx.store_path) as store:  # after the labels, so the store rows carry them too
        store_results(store, ctx.name, results)
    _print_table(results, ctx.split_label, ctx.split_note)
    text = json.dumps([r.to_dict() for r in results], indent=2)
    atomic_write(target, lambda fh: fh.write(text), mode="w")
    echo(f"\nstored in {ctx.store_path} (evaluation ids {[r.extras['store_id'] for r in results]}) and {target}")
    _print_verdict(results[0])


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
        if r.expected_accuracy:
            mean, low, high = r.expected_accuracy["robust"]
            echo(f"{'':>8} expected over {r.draws} draws: {mean:.1%} [{low:.1%}, {high:.1%}] (95% interval)")
    for flag in first.warnings:
        echo(f"\nflag [{flag['code']}] {flag['detail']}", fg="yellow")
        echo(f"  {flag['meaning']}\n  {flag['advice']}")


def _print_verdict(first) -> None:  # noqa: ANN001
    """The last line: ``verdict: reliable`` or ``verdict: suspicious: <flag codes>``."""
    echo(f"verdict: {first.verdict}", bold=True, fg=None if first.verdict == "reliable" else "yellow")
