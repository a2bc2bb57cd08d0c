"""Forward-only passes: ``torch.inference_mode`` against ``torch.no_grad``, per forward pass.

The batch-wise evaluation runs its clean passes and the verification of every adversarial
example under ``torch.no_grad`` (``advlab.attacks._core.predict``). This script measures what
``torch.inference_mode`` would change. It times one forward pass of the Fashion-MNIST
``small_cnn`` on a batch of test points in two ways: ``predict`` as it is, and ``predict`` under
``inference_mode`` with the logits cloned outside it. The clone is what keeps inference tensors
out of autograd later, so it is timed too. The two are interleaved in pairs (the order
alternates). The script prints the mean time ratio inference/no_grad over the pairs, with a 95 %
t interval (n = the pairs), and checks that the logits are bit-identical.

    python benchmarks/inference_mode.py --batch-size 500 --pairs 400

Untrained weights time the same as trained ones. Never part of the test suite; on a shared
machine the timings are "busy machine" figures.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import advlab
from advlab.attacks._core import predict


def predict_inference(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``predict`` under ``torch.inference_mode``, cloned outside it (an ordinary tensor)."""
    with torch.inference_mode():
        logits = predict(model, x, batch_size)
    return logits.clone()


def timed(model: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[float, torch.Tensor]:
    """Seconds of one forward pass over the whole batch (``mode``: "inference" or "no_grad"),
    and the logits."""
    run = predict_inference if mode == "inference" else predict
    start = time.perf_counter()
    logits = run(model, x, len(x))
    return time.perf_counter() - start, logits


def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t (scipy if present, else the normal 1.96 for df >= 30)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return 1.96 if df >= 30 else 2.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = advlab.load_dataset("fashion-mnist", split="test", n=args.batch_size)
    x = data.x if hasattr(data, "x") else torch.stack([data[i][0] for i in range(len(data))])
    model = advlab.create_model("small_cnn", seed=0).eval()
    for mode in ("inference", "no_grad", "inference", "no_grad"):  # warm-up
        timed(model, x, mode)
    ratios = []
    for pair in range(args.pairs):
        order = ("inference", "no_grad") if pair % 2 == 0 else ("no_grad", "inference")
        result = {mode: timed(model, x, mode) for mode in order}
        assert torch.equal(result["inference"][1], result["no_grad"][1]), "logits differ"
        ratios.append(result["inference"][0] / result["no_grad"][0])
    n = len(ratios)
    mean = sum(ratios) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in ratios) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    verdict = ("faster" if mean + half < 1 else "slower" if mean - half > 1 else "no difference shown")
    load = os.getloadavg()
    print(f"small_cnn forward, batch {args.batch_size}, {args.threads} thread(s), load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"time ratio inference_mode / no_grad: {mean:.3f} [{mean - half:.3f}, {mean + half:.3f}] "
          f"(95 % t interval, n = {n} pairs): {verdict}; logits bit-identical in every pair")


if __name__ == "__main__":
    main()
