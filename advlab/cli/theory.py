"""``advlab theory``: the lecture experiments on where adversarial examples come from.

    advlab theory random-relu --quick          (one gradient step flips random ReLU networks)
    advlab theory spirals --label-noise 0.1    (small vs over-parametrised MLPs on two spirals)

Each command writes its figures and a JSON file into ``--out`` (default ``<runs root>/theory``)
and records the result in the store of the runs root (``advlab.db``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import echo, runs_root, seed_everything, setup_logging, user_errors

theory_app = typer.Typer(
    help="Theory experiments: one-step adversarial examples in random ReLU networks, and "
         "small vs over-parametrised MLPs on two spirals.",
    no_args_is_help=True,
)


def _output(out: Path | None, default: str) -> tuple[Path, Path]:
    """The output folder and the store: ``--out`` and its parent's store, or under the runs root."""
    if out is not None:
        return Path(out), Path(out).parent / "advlab.db"
    return runs_root() / default, runs_root() / "advlab.db"


def _store(store_path: Path, kind: str, result: dict[str, Any], out_dir: Path | None = None) -> int:
    from advlab.store import Store

    if out_dir is not None:  # figures are relative to it; the report resolves them from here
        result = {**result, "out_dir": str(Path(out_dir).resolve())}
    with Store(store_path) as store:
        return store.add_evaluation(None, kind, result["params"], result)


@theory_app.command("random-relu")
@user_errors
def random_relu(
    quick: Annotated[bool, typer.Option("--quick", help="Small grid (d = 10, 100; 50 inputs) for a quick look.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default <runs root>/theory).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the networks and inputs.")] = 0,
    networks: Annotated[int, typer.Option(help="Independent random networks per configuration.")] = 10,
) -> None:
    """Sweep input dimension, width (with a bottleneck) and depth of random ReLU networks."""
    setup_logging()
    from advlab.experiments.random_relu import random_relu_sweep

    folder, store_path = _output(out, "theory")
    seed_everything(seed)
    if networks < 1:
        raise ValueError(f"--networks must be at least 1 (10 or more to see the spread), got {networks}")
    result = random_relu_sweep(folder, quick=quick, seed=seed, networks=networks)
    result["params"]["seed"] = seed
    record = _store(store_path, "theory-random-relu", result, folder)
    echo(f"{'d':>6} {'hidden block':>22} {'depth':>5} {'flip rate':>9} {'range over nets':>15} "
         f"{'|d|/|x|*sqrt(d)':>16} {'lin. error':>10}", bold=True)
    for row in result["rows"]:
        block = "-".join(str(w) for w in row["block"])
        spread = f"[{row['flip_rate_min']:.2f}, {row['flip_rate_max']:.2f}]"
        echo(f"{row['input_dim']:>6} {block:>22} {row['depth']:>5} {row['flip_rate']:>9.3f} {spread:>15} "
             f"{row['scaled_step_median']:>16.3g} {row['linearity_error_median']:>10.3g}")
    echo(f"({result['params']['networks']} networks per configuration)")
    echo("\nRelative linearity error along the gradient at step ||x||/sqrt(d) (d = 100), median [10 %, 90 %]:",
         bold=True)
    for row in result["linearity"]:
        at = row["steps"].index(1.0)
        name = "no bottleneck" if row["bottleneck"] is None else f"bottleneck {row['bottleneck']}"
        echo(f"  {name:<16} {row['median'][at]:.3g} [{row['q10'][at]:.3g}, {row['q90'][at]:.3g}] n={row['n']}")
    echo("\nWhat the measurements say about the claims (Bubeck et al. 2021; Bartlett et al. 2021):", bold=True)
    for claim in result["claims"]:
        echo(f"  - {claim}", fg="yellow" if "NOT" in claim else None)
    echo(f"\nfigure {folder / 'random_relu.png'}, data {folder / 'random_relu.json'}; "
         f"stored in {store_path} (evaluation id {record})")


@theory_app.command("spirals")
@user_errors
def spirals(
    label_noise: Annotated[float, typer.Option(help="Fraction of training labels flipped (0 to 1).")] = 0.2,
    epochs: Annotated[int, typer.Option(help="Full-batch Adam steps per model.")] = 1000,
    out: Annotated[Path | None, typer.Option(help="Output folder (default <runs root>/theory/spirals).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the data, initialisations and directions.")] = 0,
) -> None:
    """Train a small and an over-parametrised MLP on two spirals; regions and weight landscapes."""
    setup_logging()
    from advlab.experiments.spirals import spirals_compare

    folder, store_path = _output(out, "theory/spirals")
    seed_everything(seed)
    result = spirals_compare(folder, label_noise=label_noise, epochs=epochs, seed=seed)
    record = _store(store_path, "theory-spirals", result, folder)
    echo(f"{'model':>6} {'widths':>10} {'parameters':>10} {'train acc':>9} {'test acc':>8}", bold=True)
    for name in ("small", "large"):
        model = result[name]
        widths = "-".join(str(w) for w in model["widths"])
        echo(f"{name:>6} {widths:>10} {model['parameters']:>10} {model['train_accuracy']:>9.3f} "
             f"{model['test_accuracy']:>8.3f}")
    echo(f"\nfigures in {folder}: {', '.join(result['figures'].values())}; data spirals.json; "
         f"stored in {store_path} (evaluation id {record})")
