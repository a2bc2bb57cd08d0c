"""Epoch selection: a run's selected model (``model``) against its last epoch (``last``).

Adversarial validation keeps the epoch with the highest adversarial validation accuracy (Rice
et al. 2020's early stopping against robust overfitting). When the epochs' validation figures
differ by less than their noise, the maximum may pick an early, un-annealed model. This script
measures what the choice cost on held-out test points: both models of one run directory (its
``model.safetensors`` and ``last.safetensors``), evaluated with the same preset on the same first
``--n`` Fashion-MNIST test points (never trained or selected on), with 95 % Clopper-Pearson
intervals and the paired difference last - selected (a difference only when its 95 % interval
excludes 0).

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
    evaluate_cell,
    held_out_points,
    paired_difference,
)
from advlab.models.io import load_model


def measure(run_dir: Path, name: str, x: torch.Tensor, y: torch.Tensor, config: CapacityConfig) -> dict:
    """Clean and robust accuracy of ``run_dir/<name>.safetensors`` on ``(x, y)``, measured as a
    capacity cell is (:func:`advlab.experiments.capacity.evaluate_cell`)."""
    model = load_model(run_dir, name=name)
    return {"name": name, "epoch": (model.advlab_metadata or {}).get("epoch"),
            **evaluate_cell(model, x, y, config)}


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
    mean, lo, hi = paired_difference(rows[1]["robust_correct"], rows[0]["robust_correct"])
    verdict = "a difference" if lo > 0 or hi < 0 else "no difference shown"
    print(f"robust last - selected = {100 * mean:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] "
          f"(n {len(y)}, paired) -> {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "rows": rows,
                                         "difference": [mean, lo, hi]}, indent=1))


if __name__ == "__main__":
    main()
