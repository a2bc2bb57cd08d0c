"""``advlab reproduce NAME``: one seed result per command, the published claim next to the measured one.

    advlab reproduce --list
    advlab reproduce fawzi-landscape --out runs/reproduce/fawzi-landscape

Figures and ``<name>.json`` go to ``--out`` (default ``<runs root>/reproduce/<name>``); the
trained models are cached next to it (``<runs root>/reproduce/models``). Every measured value
comes with n and a 95 % interval; "agrees" is printed only when the interval decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advlab.cli._common import echo, runs_root, seed_everything, setup_logging, user_errors


@user_errors
def reproduce(
    name: Annotated[str | None, typer.Argument(help="Which result (see --list).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the reproductions with their runtimes.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default <runs root>/reproduce/NAME).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the models, points and directions.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer points (wider intervals); for capacity, the digits pipeline check.")] = False,
) -> None:
    """Reproduce one result of the source material and print the claim next to the measurement."""
    setup_logging()
    from advlab.experiments.reproduce import REPRODUCTIONS
    from advlab.experiments.reproduce import reproduce as run

    if list_ or name is None:
        width = max(len(n) for n in REPRODUCTIONS)
        echo("runtimes at the defaults, measured once on a busy shared 2-core machine "
             "(training included where it says so; a laptop CPU is usually faster)")
        for entry in REPRODUCTIONS.values():
            echo(f"{entry.name:<{width}}  {entry.runtime:<40} {entry.claim}")
        return
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; choose one of: {', '.join(REPRODUCTIONS)}")
    folder = out if out is not None else runs_root() / "reproduce" / name
    seed_everything(seed)
    result = run(name, folder, seed=seed, quick=quick)
    echo(f"{name} ({result['source']})", bold=True)
    echo(f"  published: {result['claim']}")
    echo(f"  measured:  {result['measured']}")
    agrees = {True: "the interval supports the claim", False: "the interval contradicts the claim",
              None: "the interval does not decide (or the claim has no threshold to test)"}[result["agrees"]]
    echo(f"  verdict:   {agrees}", fg=None if result["agrees"] else "yellow")
    store_path = (Path(out).parent if out is not None else runs_root()) / "advlab.db"
    from advlab.store import Store

    with Store(store_path) as store:
        record = store.add_evaluation(None, "reproduce", {"name": name, "seed": seed, "quick": quick},
                                      {**result, "out_dir": str(Path(folder).resolve())})
    echo(f"figures and {name}.json in {folder} ({result['time_s']:.0f} s); stored in {store_path} "
         f"(evaluation id {record})")
