"""Throughput of ``advlab.training.fit`` against a bare PyTorch loop doing the same work.

Both train the same model (same initial weights) on the same data with the same batch size,
Adam and a constant learning rate, for the same number of epochs; the bare loop shuffles with
``randperm`` and slices in-memory tensors (the fastest plain loop), ``fit`` runs with
``progress=False`` and no run directory. The two are timed interleaved (A B A B ...) after one
warm-up each, so slow drifts of a shared machine hit both; the medians give samples/s and the
overhead of ``fit`` (target: at most 5 %).

    python benchmarks/training_throughput.py                       # Fashion-MNIST-shaped, small_cnn
    python benchmarks/training_throughput.py --n 1024 --reps 3     # a quick check
    python benchmarks/training_throughput.py --device cuda --n 60000 --json out.json

Never part of the test suite; numbers from a busy machine are not worth reporting.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from advlab._utils import resolve_device
from advlab.models import create_model
from advlab.training import fit


def synthetic_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST-shaped data: x (n, 1, 28, 28) uniform in [0, 1], y (n,) in 0..9."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
              lr: float, device: torch.device) -> None:
    """The plain PyTorch loop fit is measured against."""
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(batch_size):
            index = index.to(device)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def advlab_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
               lr: float, device: torch.device) -> None:
    fit(model, (x, y), epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
        schedule="constant", progress=False, device=device)


def timed(run: Callable[..., None], model: nn.Module, device: torch.device, **kwargs) -> float:
    """Wall seconds of ``run`` on a fresh copy of ``model``."""
    fresh = copy.deepcopy(model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run(fresh, device=device, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small_cnn", help="advlab model name")
    parser.add_argument("--n", type=int, default=8192, help="training samples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of each")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x, y = synthetic_data(args.n)
    model = create_model(args.model, 10, (1, 28, 28), seed=0)
    kwargs = dict(x=x, y=y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    runs = {"bare": bare_loop, "fit": advlab_fit}
    for run in runs.values():  # warm-up: lazy imports, allocator, kernels
        timed(run, model, device, **{**kwargs, "epochs": 1})
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, run in runs.items():  # interleaved: A B A B ...
            seconds[name].append(timed(run, model, device, **kwargs))
    samples = args.n * args.epochs
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rate = {name: samples / value for name, value in median.items()}
    overhead = (median["fit"] / median["bare"] - 1.0) * 100.0
    print(f"model {args.model}, {args.n} samples x {args.epochs} epoch(s), batch {args.batch_size}, "
          f"device {device}, threads {torch.get_num_threads()}, {args.reps} interleaved reps")
    for name in runs:
        spread = ", ".join(f"{s:.3f}" for s in seconds[name])
        print(f"  {name:<5} median {median[name]:.3f} s  {rate[name]:>10.0f} samples/s   [{spread}]")
    verdict = "within" if overhead <= 5.0 else "ABOVE"
    print(f"fit / bare throughput ratio {rate['fit'] / rate['bare']:.3f}; "
          f"overhead {overhead:+.1f} % ({verdict} the 5 % target)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "device": str(device), "seconds": seconds,
                       "samples_per_s": rate, "overhead_percent": overhead}, handle, indent=2)


if __name__ == "__main__":
    main()
