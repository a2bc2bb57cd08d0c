"""Where PGD's time goes beyond the model passes: advlab against torchattacks, part by part.

Two measurements that split the PGD row of ``attacks.py`` (advlab / torchattacks) into its causes:

1. *Bookkeeping*: both PGDs (10 steps, Linf and L2) on a trivial linear model (784 -> 10), so
   that the model passes cost little and what is left is each library's own work per run
   (best-iterate update, projection, input and output checks).
2. *The last-iterate score*: advlab forwards the last iterate of the samples that no step has
   fooled (it returns the best iterate; torchattacks returns the last one unchecked). The script
   counts those rows on the benchmark CNN and times a no-grad forward of that many rows, next to
   a 128-row forward and forward+backward pass.

    benchmarks/.venv-peers/bin/python benchmarks/pgd_overhead.py --threads 1

Never part of the test suite; timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import advlab.attacks as A
from advlab.threat import ThreatModel

try:  # run as a script (benchmarks/ on sys.path) or as benchmarks.pgd_overhead
    import attacks as bench
except ImportError:  # pragma: no cover
    from benchmarks import attacks as bench

EPS = {"linf": 0.1, "l2": 1.0}


def median_ms(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median wall time in ms of each function over ``reps`` interleaved calls (after a warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def pgd_runners(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> dict[str, Callable[[], object]]:
    import torchattacks

    eps = EPS[norm]
    step = 2.5 * eps / 10
    peer = (torchattacks.PGD if norm == "linf" else torchattacks.PGDL2)(
        model, eps=eps, alpha=step, steps=10, random_start=False)
    threat = ThreatModel(norm, eps)
    return {"advlab": lambda: A.pgd(model, x, y, threat, steps=10, step_size=step),
            "torchattacks": lambda: peer(x, y)}


def last_iterate_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> int:
    """Rows of advlab's final forward: a pre-hook on the first layer records each pass's batch."""
    sizes: list[int] = []
    hook = next(model.children()).register_forward_pre_hook(lambda _m, inp: sizes.append(len(inp[0])))
    try:
        pgd_runners(model, x, y, norm)["advlab"]()
    finally:
        hook.remove()
    return sizes[10] if len(sizes) > 10 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=200, help="repetitions of the trivial-model runs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cache-dir", default="runs/benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench.steady_malloc()
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x_rand, y_rand = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    print(f"1. bookkeeping: PGD-10 on a linear model, batch {args.batch}, {args.reps} reps, ms per run")
    for norm in EPS:
        ms = median_ms(pgd_runners(linear, x_rand, y_rand, norm), args.reps)
        print(f"   {norm:<5} advlab {ms['advlab']:.2f}  torchattacks {ms['torchattacks']:.2f}  "
              f"difference {ms['advlab'] - ms['torchattacks']:+.2f}")

    cnn_args = argparse.Namespace(dataset="fashion-mnist", train_samples=10**9, epochs=2, cache_dir=args.cache_dir)
    model = bench.get_model(cnn_args, torch.device("cpu"))
    x_test, y_test = bench.load_split("fashion-mnist", "test")
    x, y = x_test[: args.batch], y_test[: args.batch]
    rows = {norm: last_iterate_rows(model, x, y, norm) for norm in EPS}

    def forward(n: int) -> None:
        with torch.no_grad():
            model(x[:n])

    def gradient_pass() -> None:
        with A.model_guard(model):
            x_req = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)

    fns: dict[str, Callable[[], object]] = {"forward+backward": gradient_pass, f"forward {len(x)}": lambda: forward(len(x))}
    fns.update({f"forward {n} ({norm})": (lambda n=n: forward(n)) for norm, n in rows.items()})
    ms = median_ms(fns, 25)
    print(f"2. the last-iterate score on the Fashion-MNIST CNN, batch {len(x)}, ms per call")
    for name, value in ms.items():
        print(f"   {name:<22} {value:.2f}")
    for norm, n in rows.items():
        share = ms[f"forward {n} ({norm})"] / (10 * ms["forward+backward"])
        print(f"   {norm}: {n} rows not fooled by any step; their forward is {100 * share:.2f} % of 10 passes")


if __name__ == "__main__":
    main()
