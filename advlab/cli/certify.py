"""``advlab certify``: certified accuracy per radius (randomized smoothing or IBP) next to the
empirical robust accuracy at the same radius, with n and 95 % intervals; JSON and store rows.

    advlab certify runs/noise --method smoothing --sigma 0.25 --draws 10000 --points 100 --eps 0.25 0.5
    advlab certify runs/ibp --method ibp --eps 0.05 0.1 --points 500
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import attack_progress, echo, setup_logging

METHODS = ("smoothing", "ibp")


def certify(
    run: Annotated[Path | None, typer.Argument(help="Run directory (advlab train --out ...).")] = None,
    model_file: Annotated[Path | None, typer.Option(help="A saved model (.safetensors/.json) instead of a run.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the run's).")] = None,
    method: Annotated[str, typer.Option(help="smoothing (L2, Cohen et al. 2019) or ibp (Linf, Gowal et al. 2018).")] = "smoothing",
    eps: Annotated[list[float] | None, typer.Option(help="Radii: L2 for smoothing (default 0 0.25 0.5 0.75 1), Linf for ibp (default 0.1).")] = None,
    sigma: Annotated[float, typer.Option(help="Smoothing noise level.")] = 0.25,
    n: Annotated[int, typer.Option("--draws", "--n", help="Smoothing: estimation draws N per point (--n is an alias; under torchrun write --draws).")] = 10_000,
    n0: Annotated[int, typer.Option(help="Smoothing: selection draws per point.")] = 100,
    alpha: Annotated[float, typer.Option(help="Smoothing: failure probability.")] = 0.001,
    points: Annotated[int, typer.Option(help="Number of test points.")] = 100,
    empirical: Annotated[bool, typer.Option("--empirical/--no-empirical", help="Also attack at every radius.")] = True,
    preset: Annotated[str, typer.Option(help="IBP: the evaluate preset of the empirical check.")] = "fast",
    attack_steps: Annotated[int, typer.Option(help="Smoothing: PGD steps on the smoothed classifier.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Inputs per forward pass.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the noise, the attacks and the test subset.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset files are.")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: certify-<method>.json in the run directory).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Certify robustness: a lower bound per radius, shown next to the attacks' upper bound."""
    setup_logging()
    import json

    import torch

    from advlab._utils import atomic_write
    from advlab.certify.compare import compare_ibp, compare_smoothing
    from advlab.cli._runs import load_run, test_points
    from advlab.store import Store

    if method not in METHODS:
        raise ValueError(f"--method must be smoothing or ibp, got {method!r}")
    if points < 1:
        raise ValueError(f"--points must be >= 1, got {points}")
    radii = list(eps) if eps else ([0.0, 0.25, 0.5, 0.75, 1.0] if method == "smoothing" else [0.1])
    if any(r < 0 for r in radii):
        raise ValueError(f"radii must be >= 0, got {radii}")
    ctx = load_run(run, model_file=model_file, dataset=dataset, data_dir=data_dir, device=device)
    x, y = test_points(ctx, points, seed=seed)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    params: dict[str, Any] = {"method": method, "radii": radii, "points": len(x), "seed": seed,
                              "dataset": ctx.dataset}
    total = len(x) * (1 + len(radii) * empirical) if method == "smoothing" else len(x)
    with Store(ctx.store_path) as store, attack_progress("certifying", enabled=progress,
                                                         total=total) as tick:
        if method == "smoothing":
            params.update(sigma=sigma, n=n, n0=n0, alpha=alpha, attack_steps=attack_steps)
            result = compare_smoothing(ctx.model, x, y, sigma=sigma, radii=radii, n0=n0, n=n,
                                       alpha=alpha, batch_size=batch_size, empirical=empirical,
                                       attack_steps=attack_steps, generator=generator, progress=tick)
        else:
            params.update(preset=preset)
            result = compare_ibp(ctx.model, x, y, eps=radii, empirical=empirical, preset=preset,
                                 seed=seed, batch_size=batch_size, progress=tick, store=store,
                                 run_name=ctx.name)
        store_id = store.add_evaluation(ctx.name, f"certify-{method}", params, result)
    _print_table(result, method)
    target = out or ctx.run_dir / f"certify-{method}.json"
    text = json.dumps({"params": params, "result": result, "store_id": store_id}, indent=2)
    atomic_write(target, lambda fh: fh.write(text), mode="w")
    echo(f"\nstored in {ctx.store_path} (evaluation id {store_id}) and {target}")


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return f"{'-':>27}"
    return (f"{entry['accuracy']:>7.1%} [{entry['low']:.3f}, {entry['high']:.3f}]"
            f" {entry['correct']:>4}/{entry['total']:<4}")


def _print_table(result: dict[str, Any], method: str) -> None:
    norm = "L2" if method == "smoothing" else "Linf"
    head = (f"randomized smoothing, sigma {result['sigma']:g}, N {result['n']}, abstain "
            f"{result['abstain']:.1%}" if method == "smoothing" else "interval bound propagation")
    echo(f"{result['points']} test points, {head}", bold=True)
    echo(f"{norm + ' radius':>11}  {'certified (95 % CI, n)':<33}{'empirical robust (95 % CI, n)'}")
    suspicious = []
    for row in result["rows"]:
        echo(f"{row['radius']:>11.4g}  {_cell(row['certified'])}      {_cell(row['empirical'])}")
        cert, emp = row["certified"], row["empirical"]
        if emp is not None and cert["correct"] > emp["correct"]:
            suspicious.append(row["radius"])
        if row.get("certified_but_broken"):
            suspicious.append(row["radius"])
    echo("\ncertified accuracy is a lower bound and the empirical robust accuracy an upper bound "
         "on the true robust accuracy.")
    if suspicious:
        echo(f"suspicious: at radius {sorted(set(suspicious))} more points are certified than "
             "survive the attacks (a certified point was broken, or the Monte-Carlo check failed "
             "with probability alpha); do not trust these certificates", fg="yellow")
