"""Capacity study: robust accuracy against model width x defense x CPU budget (the frontier).

Goodfellow's advice ("you need more model capacity" for adversarial training) and Madry et al.'s
finding that robustness grows with capacity, measured on Fashion-MNIST at Linf eps = 0.1:

* models: ``small_cnn`` at x1 / x2 / x4 its channels and hidden units ((32, 64), 128 ->
  (64, 128), 256 -> (128, 256), 512) and one wider, deeper zoo model (``preact_resnet18`` at
  width 16, with BatchNorm);
* defenses: ``fgsm-rs`` (Wong et al. 2020), ``n-fgsm`` (de Jorge et al. 2022), ``trades``
  (Zhang et al. 2019, 5 steps) and ``pgd-at`` (Madry et al. 2018, PGD-10);
* budgets: epoch counts (``--epochs 2,5,10``); the CPU budget of a cell is what it *measured*;
* options under test, each a set of cells of its own: ``--schedule cyclic|multistep`` and
  ``--ema-decay 0.999`` (kept in the recipes only if they help).

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

CPU-minutes are process CPU seconds / 60 (about wall time x threads when the threads are busy).
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from advlab import ThreatModel
from advlab.data import load_dataset
from advlab.evaluation import evaluate
from advlab.experiments.runs import train_run
from advlab.stats import clopper_pearson_interval

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "x1": ("small_cnn", {"channels": [32, 64], "hidden": 128}),
    "x2": ("small_cnn", {"channels": [64, 128], "hidden": 256}),
    "x4": ("small_cnn", {"channels": [128, 256], "hidden": 512}),
    "resnet16": ("preact_resnet18", {"width": 16}),
}
QUICK_MODELS = {"x1": ("small_cnn", {"channels": [8, 16], "hidden": 32}),
                "x2": ("small_cnn", {"channels": [16, 32], "hidden": 64})}


def defenses(eps: float) -> dict[str, dict[str, Any]]:
    """The defenses and their parameters at ``eps`` (benchmarks/defenses.py's budgets)."""
    return {"fgsm-rs": {"eps": eps, "clean_logits": False},
            "n-fgsm": {"eps": eps, "clean_logits": False},
            "trades": {"eps": eps, "steps": 5, "beta": 6.0},
            "pgd-at": {"eps": eps, "steps": 10, "clean_logits": False}}


def cell_dir(args: argparse.Namespace, model_key: str, defense: str, epochs: int) -> Path:
    """``--cache/<dataset>-<model>-<defense>-<epochs>ep[-<schedule>][-ema<decay>]``."""
    extra = (f"-{args.schedule}" if args.schedule != "onecycle" else "") + (
        f"-ema{args.ema_decay:g}" if args.ema_decay else "")
    return Path(args.cache) / f"{args.dataset}-{model_key}-{defense}-{epochs}ep{extra}"


def train_cell(args: argparse.Namespace, model_key: str, defense: str, epochs: int) -> dict[str, Any]:
    """Train (or resume) one cell; its training figures."""
    model, options = (QUICK_MODELS if args.quick else MODELS)[model_key]
    run_dir = cell_dir(args, model_key, defense, epochs)
    resumed = (run_dir / "checkpoint.pt").exists()
    load_before, cpu_before, wall_before = os.getloadavg(), time.process_time(), time.perf_counter()
    run = train_run(run_dir, dataset=args.dataset, model=model, model_options=options,
                    defense=defense, defense_params=defenses(args.eps)[defense], epochs=epochs,
                    lr=args.lr, batch_size=128, schedule=args.schedule, ema_decay=args.ema_decay,
                    seed=args.seed, device=args.device,
                    n_train=args.n_train, data_dir=args.data_dir, resume=True,
                    checkpoint_every=100, adv_val_n=args.adv_val_n, progress=False)
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    if resumed:  # the earlier process's time is lost: its epochs' times, at this cell's CPU rate
        epoch_time = sum(r["time_s"] for r in run.result.history)
        cpu, wall = cpu * epoch_time / max(wall, 1e-9), epoch_time
    best = run.result.history[run.result.best_epoch - 1]
    return {"model": model_key, "architecture": model, "model_options": options,
            "defense": defense, "epochs": epochs, "schedule": args.schedule,
            "ema_decay": args.ema_decay, "run_dir": str(run_dir), "resumed": resumed,
            "train_wall_s": wall, "train_cpu_s": cpu, "threads": torch.get_num_threads(),
            "load_before": list(load_before), "load_after": list(os.getloadavg()),
            "best_epoch": run.result.best_epoch, "adv_val_acc": best.get("adv_val_acc"),
            "events": run.result.events, "_model": run.result.model}


def evaluate_cell(model: Any, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """Clean and robust accuracy (``--preset``) with 95 % intervals, per-point robust outcomes."""
    started = time.perf_counter()
    result = evaluate(model.eval(), x, y, ThreatModel("linf", args.eps), attacks=args.preset,
                      sanity=not args.quick, seed=args.seed, device=args.device)
    n = len(y)
    clean_k, robust_k = int(result.clean_correct.sum()), int(result.robust_correct.sum())
    return {"n_test": n, "preset": args.preset, "eval_s": time.perf_counter() - started,
            "clean_acc": clean_k / n, "clean_ci": clopper_pearson_interval(clean_k, n),
            "robust_acc": robust_k / n, "robust_ci": clopper_pearson_interval(robust_k, n),
            "robust_correct": [bool(v) for v in result.robust_correct.tolist()],
            "warnings": [w.get("code", "?") for w in result.warnings]}


def run_cell(args: argparse.Namespace, model_key: str, defense: str, epochs: int,
             data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """One cell's figures: cached in ``cell.json`` once finished."""
    cache = cell_dir(args, model_key, defense, epochs) / "cell.json"
    if cache.exists():
        cell = json.loads(cache.read_text())
        if cell.get("n_test") == len(data[1]) and cell.get("preset") == args.preset:
            return cell
    torch.set_num_threads(args.threads)
    cell = train_cell(args, model_key, defense, epochs)
    cell.update(evaluate_cell(cell.pop("_model"), *data, args))
    cache.write_text(json.dumps(cell, indent=2))
    return cell


def frontier(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto frontier: cells no other cell beats in both CPU time and robust accuracy."""
    ordered = sorted(cells, key=lambda c: (c["train_cpu_s"], -c["robust_acc"]))
    best, out = -1.0, []
    for cell in ordered:
        if cell["robust_acc"] > best:
            out.append(cell)
            best = cell["robust_acc"]
    return out


def paired_difference(a: list[bool], b: list[bool]) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` on the same points with a 95 % normal interval (paired)."""
    n = len(a)
    diffs = [int(u) - int(v) for u, v in zip(a, b, strict=True)]
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def table(cells: list[dict[str, Any]]) -> str:
    on = {id(c) for c in frontier(cells)}
    lines = ["| model | defense | epochs (best) | clean % [95 % CI] | robust % [95 % CI] | n | "
             "CPU-min | wall min | threads | load | frontier |", "|" + "---|" * 11]
    for c in sorted(cells, key=lambda c: (c["defense"], c["model"], c["epochs"])):
        lo, hi = c["clean_ci"]
        rlo, rhi = c["robust_ci"]
        lines.append(f"| {c['model']} | {c['defense']} | {c['epochs']} ({c['best_epoch']}) | "
                     f"{_pct(c['clean_acc'])} [{_pct(lo)}, {_pct(hi)}] | {_pct(c['robust_acc'])} "
                     f"[{_pct(rlo)}, {_pct(rhi)}] | {c['n_test']} | {c['train_cpu_s'] / 60:.2f} | "
                     f"{c['train_wall_s'] / 60:.2f} | {c['threads']} | {c['load_before'][0]:.1f}"
                     f"-{c['load_after'][0]:.1f} | {'yes' if id(c) in on else ''} |")
    return "\n".join(lines)


def findings(cells: list[dict[str, Any]]) -> list[str]:
    """Capacity differences (largest vs smallest small_cnn, paired) and the PGD-AT target."""
    out, index = [], {(c["model"], c["defense"], c["epochs"]): c for c in cells}
    keys = sorted({k[0] for k in index if k[0].startswith("x")}, key=lambda k: int(k[1:]))
    for (model, defense, epochs), wide in sorted(index.items()):
        narrow = index.get((keys[0], defense, epochs)) if keys else None
        if narrow is None or model == keys[0] or not model.startswith("x"):
            continue
        mean, lo, hi = paired_difference(wide["robust_correct"], narrow["robust_correct"])
        verdict = "a difference" if lo > 0 or hi < 0 else "no difference shown"
        out.append(f"{defense} {epochs} ep: robust {model} - {keys[0]} = {100 * mean:+.1f} points "
                   f"[{100 * lo:+.1f}, {100 * hi:+.1f}] (n {wide['n_test']}, paired) -> {verdict}; "
                   f"CPU x{wide['train_cpu_s'] / max(narrow['train_cpu_s'], 1e-9):.1f}")
    pgd = [c for c in cells if c["defense"] == "pgd-at"]
    if pgd:
        ref = max(pgd, key=lambda c: c["robust_acc"])
        for cell in frontier(cells):
            share = cell["robust_acc"] / max(ref["robust_acc"], 1e-9)
            speed = cell["train_cpu_s"] / max(ref["train_cpu_s"], 1e-9)
            if cell["defense"] != "pgd-at":
                ok = share >= 0.95 and speed <= 0.25
                out.append(f"frontier {cell['model']} {cell['defense']} {cell['epochs']} ep: "
                           f"{share:.1%} of the best pgd-at's robust accuracy in {speed:.0%} of "
                           f"its CPU time -> {'PASS' if ok else 'fail'} (target >= 95 % in <= 25 %)")
    return out


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(sorted({c["model"] for c in cells}), "osD^v<>"))
    for defense in sorted({c["defense"] for c in cells}):
        for c in (c for c in cells if c["defense"] == defense):
            lo, hi = c["robust_ci"]
            axis.errorbar(c["train_cpu_s"] / 60, 100 * c["robust_acc"],
                          yerr=[[100 * (c["robust_acc"] - lo)], [100 * (hi - c["robust_acc"])]],
                          marker=markers[c["model"]], color=f"C{sorted({d['defense'] for d in cells}).index(defense)}",
                          linestyle="none", capsize=2)
        axis.plot([], [], color=f"C{sorted({d['defense'] for d in cells}).index(defense)}",
                  marker="o", linestyle="none", label=defense)
    front = frontier(cells)
    axis.step([c["train_cpu_s"] / 60 for c in front], [100 * c["robust_acc"] for c in front],
              where="post", color="black", linewidth=1, label="frontier")
    for model, marker in markers.items():
        axis.plot([], [], color="gray", marker=marker, linestyle="none", label=model)
    axis.set_xscale("log")
    axis.set_xlabel("training CPU-minutes (busy machine)")
    axis.set_ylabel(f"robust accuracy % ({cells[0]['preset']}, n = {cells[0]['n_test']})")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


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
    parser.add_argument("--adv-val-n", type=int, default=None)
    parser.add_argument("--schedule", default="onecycle", help="lr schedule of every cell")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="train every cell with model EMA (cells of their own: -ema<decay>)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache", default="runs/benchmarks/capacity")
    parser.add_argument("--out", default=None, help="JSON and plot prefix (default <cache>/capacity)")
    args = parser.parse_args()
    args.dataset = "digits" if args.quick else "fashion-mnist"
    args.models = args.models or ("x1,x2" if args.quick else "x1,x2,x4,resnet16")
    args.epochs = args.epochs or ("3,6" if args.quick else "2,5,10")
    args.lr = args.lr or (1e-2 if args.quick else 1e-3)
    args.n_test = args.n_test or (200 if args.quick else 1000)
    args.preset = args.preset or ("fast" if args.quick else "standard")
    args.adv_val_n = args.adv_val_n or (100 if args.quick else 500)
    if args.quick:
        args.cache = str(Path(args.cache).with_name(Path(args.cache).name + "-quick"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    n = min(args.n_test, len(test))
    data = (test.x[:n], test.y[:n])
    load_dataset(args.dataset, "train", data_dir=args.data_dir)  # one-time costs out of cell 1
    print(f"{args.dataset} linf {args.eps}: {n} held-out test points, preset {args.preset}, "
          f"{args.threads} threads, torch {torch.__version__}"
          f"{' (QUICK: pipeline check, not figures to quote)' if args.quick else ''}", flush=True)
    cells = []
    for epochs in (int(e) for e in args.epochs.split(",")):
        for defense in args.defenses.split(","):
            for model_key in args.models.split(","):
                cell = run_cell(args, model_key, defense, epochs, data)
                cells.append(cell)
                print(f"  {model_key:<8} {defense:<8} {epochs:>3} ep  clean {cell['clean_acc']:.1%}  "
                      f"robust {cell['robust_acc']:.1%}  {cell['train_cpu_s'] / 60:.2f} CPU-min  "
                      f"load {cell['load_before'][0]:.1f}", flush=True)
    print("\n" + table(cells) + "\n")
    print("\n".join(findings(cells)))
    prefix = Path(args.out) if args.out else Path(args.cache) / "capacity"
    prefix.with_suffix(".json").write_text(json.dumps({"args": vars(args), "cells": cells}, indent=2))
    plot(cells, prefix.with_suffix(".png"))
    print(f"\nwrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.png')}")


if __name__ == "__main__":
    main()
