"""Epoch selection: a run's selected model (``model``) against its last epoch (``last``).

Adversarial validation keeps the epoch with the highest adversarial validation accuracy (Rice
et al. 2020's early stopping against robust overfitting). When the epochs' validation figures
differ by less than their noise, the maximum may pick an early, un-annealed model. This script
measures what the choice cost on held-out test points: both models of one run directory (its
``model.safetensors`` and ``last.safetensors``), evaluated with the same preset on the same first
``--n`` Fashion-MNIST test points (never trained or selected on), with 95 % Clopper-Pearson
intervals and the paired difference last - selected (a difference only when its 95 % interval
excludes 0). It also prints the run's validation curve and the epoch that each selection rule
keeps (:func:`advlab.training.selection.select_epoch`: the plain maximum, and the latest epoch
within one standard error of it, ``--select-within-se 1``), and which of the two measured models
that epoch is (only the selected and the last weights are saved).

    python benchmarks/epoch_selection.py benchmarks/results/capacity/fashion-mnist-resnet16-n-fgsm-10ep --n 200

Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from advlab.experiments.capacity import (
    CapacityConfig,
    difference_text,
    evaluate_cell,
    held_out_points,
    paired_difference,
)
from advlab.models.io import load_model
from advlab.stats import accuracy_se
from advlab.training.selection import select_epoch


def measure(run_dir: Path, name: str, x: torch.Tensor, y: torch.Tensor, config: CapacityConfig) -> dict:
    """Clean and robust accuracy of ``run_dir/<name>.safetensors`` on ``(x, y)``, measured as a
    capacity cell is (:func:`advlab.experiments.capacity.evaluate_cell`)."""
    model = load_model(run_dir, name=name)
    return {"name": name, "epoch": (model.advlab_metadata or {}).get("epoch"),
            **evaluate_cell(model, x, y, config)}


def validation_curve(run_dir: Path) -> tuple[list[float | None], list[float | None]]:
    """The run's adversarial validation accuracy per epoch and its standard error (computed from
    the validation's point count for runs whose records predate ``adv_val_acc_se``)."""
    history = json.loads((run_dir / "history.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    n = int((config.get("adv_val") or {}).get("n") or 0)
    values = [r.get("adv_val_acc") for r in history]
    ses = [r.get("adv_val_acc_se", accuracy_se(v, n) if v is not None else None)
           for r, v in zip(history, values)]
    return values, ses


def describe_rules(run_dir: Path, rows: list[dict]) -> list[str]:
    """One line for the curve, one per selection rule with the epoch it keeps."""
    values, ses = validation_curve(run_dir)
    curve = ", ".join(f"{i + 1}: {100 * v:.1f}" for i, v in enumerate(values) if v is not None)
    lines = [f"adversarial validation per epoch (se ~{100 * max(s or 0 for s in ses):.1f} points): {curve}"]
    measured = {r["epoch"]: r["name"] for r in rows}
    for label, k in (("maximum", 0.0), ("latest within 1 se", 1.0)):
        epoch = select_epoch(values, ses, within_se=k)
        which = measured.get(epoch, "not saved, not measured")
        lines.append(f"rule {label:<19} keeps epoch {epoch} ({which})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with model and last weights")
    parser.add_argument("--n", type=int, default=200, help="held-out test points (default 200)")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = CapacityConfig(eps=args.eps, preset=args.preset)
    x, y = held_out_points(config, args.n)
    rows = [measure(args.run_dir, name, x, y, config) for name in ("model", "last")]
    for r in rows:
        print(f"{r['name']:>6} (epoch {r['epoch']}): clean {100 * r['clean_acc']:.1f} % "
              f"[{100 * r['clean_ci'][0]:.1f}, {100 * r['clean_ci'][1]:.1f}], robust "
              f"{100 * r['robust_acc']:.1f} % [{100 * r['robust_ci'][0]:.1f}, "
              f"{100 * r['robust_ci'][1]:.1f}], n {r['n_test']}, {args.preset}, {r['eval_s']:.0f} s")
    for line in describe_rules(args.run_dir, rows):
        print(line)
    print("robust last - selected = " + difference_text(rows[1]["robust_correct"],
                                                         rows[0]["robust_correct"]))
    if args.json:
        difference = paired_difference(rows[1]["robust_correct"], rows[0]["robust_correct"])
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "rows": rows,
                                         "difference": list(difference)}, indent=1))


if __name__ == "__main__":
    main()
