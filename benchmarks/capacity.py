"""Capacity study: robust accuracy against model width x defense x CPU budget (the frontier).

Goodfellow's advice ("you need more model capacity" for adversarial training) and Madry et al.'s
finding that robustness grows with capacity, measured on Fashion-MNIST at Linf eps = 0.1:

* models: ``small_cnn`` at x1 / x2 / x4 its channels and hidden units ((32, 64), 128 ->
  (64, 128), 256 -> (128, 256), 512) and one wider, deeper zoo model (``preact_resnet18`` at
  width 16, with BatchNorm);
* defenses: ``fgsm-rs`` (Wong et al. 2020), ``n-fgsm`` (de Jorge et al. 2022), ``trades``
  (Zhang et al. 2019, 5 steps) and ``pgd-at`` (Madry et al. 2018, PGD-10);
* budgets: epoch counts (``--epochs 2,5,10``); the CPU budget of a cell is what it *measured*;
* options under test, each a set of cells of its own: ``--schedule cyclic|multistep``,
  ``--ema-decay 0.999``, ``--lr 2e-3`` and ``--eps-ramp 0.2`` (kept in the recipes only if they
  help; each is paired with the same cell at the defaults).

Every cell trains with :func:`advlab.experiments.runs.train_run` (adversarial validation keeps
the most robust epoch) into ``--cache/<cell>``: a finished cell (``cell.json``) is skipped, a
killed one resumes from its checkpoint (its time is then the sum of its epochs' times). Each
model is evaluated with the ``standard`` preset on the first ``--n-test`` held-out test points
(never trained or selected on). Recorded per cell: wall time, process CPU time (all threads),
torch threads and the machine load (``os.getloadavg``) before and after -- on a machine shared
with other work the times are "busy machine" figures, and the load says how busy.

Outputs: the table (clean and robust accuracy with n and 95 % Clopper-Pearson intervals), the
Pareto frontier (no other cell is both cheaper and more robust), paired differences x4 - x1 per
defense and budget (called a difference only when the 95 % interval excludes 0), a JSON with
everything and the plot ``frontier.png`` (robust accuracy against CPU-minutes).

    python benchmarks/capacity.py                                  # the full study (many hours)
    python benchmarks/capacity.py --models x1,x2 --defenses n-fgsm,pgd-at --epochs 5
    python benchmarks/capacity.py --quick                          # digits, a minute or two
    python benchmarks/capacity.py --summary                        # every committed cell, no training
    python benchmarks/capacity.py --models x4 --defenses n-fgsm --epochs 5 --step-cost 20
                                                                   # a cell's cost before training it

CPU-minutes are process CPU seconds / 60 (about wall time x threads when the threads are busy).
The study itself lives in :mod:`advlab.experiments.capacity` (cells, frontier, paired
differences) and :mod:`advlab.experiments.capacity_report` (table, findings, plot); ``advlab
reproduce capacity`` runs it as a reproduction. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import fields
from pathlib import Path

import torch

from advlab._utils import atomic_write_json
from advlab.experiments.capacity import CapacityConfig, run_study, saved_cells, step_cost
from advlab.experiments.capacity_report import findings, plot, table


def _config(args: argparse.Namespace) -> CapacityConfig:
    return CapacityConfig(**{f.name: getattr(args, f.name) for f in fields(CapacityConfig)})


def _progress(cell: dict) -> None:
    print(f"  {cell['model']:<8} {cell['defense']:<8} {cell['epochs']:>3} ep  clean {cell['clean_acc']:.1%}  "
          f"robust {cell['robust_acc']:.1%}  {cell['train_cpu_s'] / 60:.2f} CPU-min  "
          f"load {cell['load_before'][0]:.1f}", flush=True)


def _recipe_budgets(dataset: str) -> dict[str, float]:
    """The training budgets of this dataset's recipes in CPU-minutes (2 cores x their minutes)."""
    from advlab.training.recipes import get_recipe, recipe_names

    recipes = [get_recipe(name) for name in recipe_names()]
    return {f"{r.name} ({r.budget_minutes:g} min x 2 cores)": 2 * r.budget_minutes for r in recipes
            if r.budget_minutes and r.options.get("dataset") == dataset}


def _step_costs(config: CapacityConfig, args: argparse.Namespace) -> None:
    """One line per model x defense: the measured step cost and each budget's projection."""
    budgets = [int(e) for e in args.epochs.split(",")]
    for defense in args.defenses.split(","):
        for model_key in args.models.split(","):
            cost = step_cost(config, model_key, defense, steps=args.step_cost)
            projected = ", ".join(f"{e} ep >= {e * cost['epoch_wall_min']:.1f} min wall "
                                  f"({e * cost['epoch_cpu_min']:.1f} CPU-min)" for e in budgets)
            print(f"{model_key} {defense}: {cost['wall_s_per_step']:.3f} s wall, "
                  f"{cost['cpu_s_per_step']:.3f} CPU-s a step ({cost['steps']} steps, "
                  f"{cost['threads']} threads, load {os.getloadavg()[0]:.1f}); "
                  f"{cost['steps_per_epoch']} steps an epoch -> {cost['epoch_wall_min']:.1f} min "
                  f"wall an epoch; projected training only: {projected}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated (x1,x2,x4,resnet16)")
    parser.add_argument("--defenses", default="fgsm-rs,n-fgsm,trades,pgd-at")
    parser.add_argument("--epochs", default=None, help="budgets in epochs, e.g. 2,5,10")
    parser.add_argument("--quick", action="store_true",
                        help="pipeline check on digits: two tiny widths, 3 and 6 epochs, fast preset")
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=None, help="peak lr (default 1e-3; quick 1e-2)")
    parser.add_argument("--eps-ramp", type=float, default=0.0,
                        help="grow eps linearly over this fraction of training (cells of their own: -ramp<f>)")
    parser.add_argument("--adv-val-n", type=int, default=None)
    parser.add_argument("--schedule", default="onecycle", help="lr schedule of every cell")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="train every cell with model EMA (cells of their own: -ema<decay>)")
    parser.add_argument("--check-attack", default="pgd", choices=("pgd", "apgd-ce"),
                        help="probe of the fast defenses' collapse watch (cells of their own: "
                             "-watch-<attack>)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache", default=None,
                        help="cell folders (default benchmarks/results/capacity, whose cell.json files "
                             "are committed and reused on any machine; --quick: runs/benchmarks/capacity-quick)")
    parser.add_argument("--out", default=None, help="JSON and plot prefix (default <cache>/capacity)")
    parser.add_argument("--step-cost", type=int, default=0, metavar="STEPS",
                        help="train nothing: time STEPS training steps of every --models x --defenses "
                             "cell and project the cost of its --epochs (a lower bound, not a cell)")
    parser.add_argument("--summary", action="store_true",
                        help="train nothing: the table, findings and plot of every finished cell in --cache")
    args = parser.parse_args()
    args.dataset = "digits" if args.quick else "fashion-mnist"
    args.models = args.models or ("x1,x2" if args.quick else "x1,x2,x4,resnet16")
    args.epochs = args.epochs or ("3,6" if args.quick else "2,5,10")
    args.lr = args.lr or (1e-2 if args.quick else 1e-3)
    args.n_test = args.n_test or (200 if args.quick else 1000)
    args.preset = args.preset or ("fast" if args.quick else "standard")
    args.adv_val_n = args.adv_val_n or (100 if args.quick else 500)
    args.cache = args.cache or ("runs/benchmarks/capacity-quick" if args.quick
                                else "benchmarks/results/capacity")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = _config(args)
    print(f"{args.dataset} linf {args.eps}: {args.n_test} held-out test points (at most), preset "
          f"{args.preset}, {args.threads} threads, torch {torch.__version__}"
          f"{' (QUICK: pipeline check, not figures to quote)' if args.quick else ''}", flush=True)
    if args.step_cost:
        _step_costs(config, args)
        return
    if args.summary:
        cells = saved_cells(config, args.n_test)
        if not cells:
            raise SystemExit(f"no finished {args.dataset} cells with n_test={args.n_test} and preset "
                             f"{args.preset} under {args.cache}")
    else:
        cells = run_study(config, model_keys=args.models.split(","),
                          defense_names=args.defenses.split(","),
                          epochs=[int(e) for e in args.epochs.split(",")], n_test=args.n_test,
                          on_cell=_progress)
    print("\n" + table(cells) + "\n")
    print("\n".join(findings(cells)))
    prefix = Path(args.out) if args.out else Path(args.cache) / "capacity"
    atomic_write_json(prefix.with_suffix(".json"), {"args": vars(args), "cells": cells})
    plot(cells, prefix.with_suffix(".png"), budgets=_recipe_budgets(args.dataset))
    print(f"\nwrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.png')}")


if __name__ == "__main__":
    main()
