"""Top-k input-Hessian eigenvalues of a Fashion-MNIST small_cnn: Lanczos vs power iteration vs dense.

For one test image (784 input dimensions) we compute the top-``k`` eigenvalues (by magnitude) of
the input Hessian of the cross-entropy three ways and compare the number of Hessian-vector
products (HVPs), the wall time and the relative error against the dense reference:

* advlab's batched Lanczos with full reorthogonalisation (``advlab.geometry.lanczos``);
* power iteration with deflation, PyHessian's method (Yao et al. 2020; ``steps=100``,
  ``tol=1e-3`` as in PyHessian);
* the dense Hessian (784 HVPs, in chunks) and ``torch.linalg.eigvalsh`` -- the reference.

Two cases: the ReLU ``small_cnn`` (its cross-entropy input Hessian has rank <= K - 1 = 9, so the
top-20 contains zeros and the error is reported on the nonzero eigenvalues only) and the same
weights with every ReLU replaced by ``Softplus(beta)`` (a smooth network with a full spectrum).
Targets for Lanczos: <= 100 HVPs and <= 1e-3 relative error on the top-20.

    .venv/bin/python benchmarks/geometry.py                 # untrained-ish (100 Adam steps)
    .venv/bin/python benchmarks/geometry.py --train-steps 0 --iterations 100 --json out.json
    .venv/bin/python benchmarks/geometry.py --compare --points 100 --cache-dir /tmp/geometry-runs

``--compare`` instead times :func:`advlab.geometry.compare` on 100 Fashion-MNIST test points for a
standard small_cnn against an FGSM-RS trained one (both trained briefly by
``advlab.experiments.runs.train_run`` into ``--cache-dir`` when absent: 10 000 training images, 1
epoch) and prints its rows (ratio fgsm-rs / standard, 95 % paired bootstrap interval, n, verdict).

Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import json_safe
from advlab.geometry import HessianOperator, dense_hessian, lanczos, power_iteration_deflation
from advlab.geometry.lanczos import default_steps
from advlab.models import create_model


def load_point(train_steps: int, seed: int) -> tuple[nn.Module, Tensor, Tensor, str]:
    """A small_cnn (trained for ``train_steps`` Adam steps if data exist) and one test image."""
    model = create_model("small_cnn", num_classes=10, input_shape=(1, 28, 28), seed=seed)
    try:
        from advlab.data import load_dataset

        test = load_dataset("fashion-mnist", split="test")
        train = load_dataset("fashion-mnist", split="train", n=4096, seed=seed) if train_steps else None
        source = "Fashion-MNIST test image 0"
    except Exception as error:  # noqa: BLE001 - fall back to a random image, say so
        print(f"(Fashion-MNIST unavailable: {error}; using a random image, no training)")
        gen = torch.Generator().manual_seed(seed)
        return model.eval(), torch.rand(1, 1, 28, 28, generator=gen), torch.tensor([0]), "random image"
    if train is not None:
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(train_steps):
            index = torch.randint(0, len(train), (64,), generator=gen)
            loss = nn.functional.cross_entropy(model(train.x[index]), train.y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval(), test.x[:1], test.y[:1], source


def smooth_copy(model: nn.Module, beta: float) -> nn.Module:
    """The same weights with every ReLU replaced by Softplus(beta)."""
    smooth = copy.deepcopy(model)
    for parent in smooth.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    return smooth


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def relative_errors(values: Tensor, reference: Tensor, floor: float) -> Tensor:
    """Relative errors of the ``i``-th largest ``|lambda|``, on reference values above ``floor``.

    Magnitudes are compared rank by rank, so two eigenvalues of opposite sign and nearly equal
    magnitude (frequent in the flat spectrum of an untrained smooth network) are not counted as
    an error when their order flips; a missed or inaccurate eigenvalue still is.
    """
    computed = values.abs().sort(descending=True).values
    expected = reference.abs().sort(descending=True).values
    keep = expected > floor
    return (computed[keep] - expected[keep]).abs() / expected[keep]


def run_case(name: str, model: nn.Module, x: Tensor, y: Tensor, k: int, iterations: int,
             seed: int) -> list[dict[str, Any]]:
    """Time the three methods on one model; return one row per method."""
    dim = x[0].numel()
    hessian, dense_time = timed(lambda: dense_hessian(model, x, y, batch_size=256))
    spectrum, eig_time = timed(lambda: torch.linalg.eigvalsh(hessian.double())[0])
    reference = spectrum[spectrum.abs().argsort(descending=True)][:k]  # (k,)
    floor = 1e-6 * float(reference.abs().max())
    rows = [{"case": name, "method": "dense + eigvalsh", "hvps": dim, "seconds": dense_time + eig_time,
             "values": reference, "errors": torch.zeros(int((reference.abs() > floor).sum()))}]
    methods = {
        "lanczos (advlab)": lambda op: lanczos(op, dim, k, iterations,
                                               generator=torch.Generator().manual_seed(seed)),
        "power iteration + deflation": lambda op: power_iteration_deflation(
            op, dim, k, steps=100, tol=1e-3, generator=torch.Generator().manual_seed(seed)),
    }
    for method, solve in methods.items():
        operator = HessianOperator(model, x, y)  # forward + first backward: not counted as HVPs
        (values, _), seconds = timed(lambda solve=solve, operator=operator: solve(operator))
        rows.append({"case": name, "method": method, "hvps": operator.calls, "seconds": seconds,
                     "values": values[0], "errors": relative_errors(values[0], reference, floor)})
    for row in rows:
        row["nonzero"] = int((reference.abs() > floor).sum())
        row["max_rel_error"] = float(row["errors"].max()) if row["errors"].numel() else 0.0
        row["median_rel_error"] = float(row["errors"].median()) if row["errors"].numel() else 0.0
    return rows


def print_table(rows: list[dict[str, Any]], k: int) -> None:
    header = f"{'case':<22} {'method':<29} {'HVPs':>6} {'time (s)':>9} {'nonzero':>8} {'max rel err':>12} {'median':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['case']:<22} {row['method']:<29} {row['hvps']:>6} {row['seconds']:>9.3f} "
              f"{row['nonzero']:>5}/{k:<2} {row['max_rel_error']:>12.2e} {row['median_rel_error']:>10.2e}")


def compare_benchmark(points: int, cache_dir: str, seed: int, json_path: str | None) -> None:
    """Time :func:`advlab.geometry.compare` (standard vs fgsm-rs small_cnn) and print its rows."""
    from advlab.experiments.reproduce_models import FASHION, model_pair, test_split
    from advlab.geometry import compare

    started = time.perf_counter()
    models = model_pair(cache_dir, FASHION)
    trained = time.perf_counter() - started
    x, y = test_split(FASHION, points, seed=seed)
    (a_label, a), (b_label, b) = models.items()
    result, seconds = timed(lambda: compare(a, b, x, y, labels=(a_label, b_label),
                                            generator=torch.Generator().manual_seed(seed)))
    print(f"compare on {points} Fashion-MNIST test points: {seconds:.1f} s "
          f"(busy shared machine; models loaded/trained in {trained:.0f} s)")
    print("per quantity:", ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    print("\n| quantity | standard median | fgsm-rs median | ratio | 95 % CI | n | verdict |")
    print("|---|---|---|---|---|---|---|")
    for name, row in result.rows.items():
        print(f"| {name} | {row['a_median']:.4g} | {row['b_median']:.4g} | {row['ratio']:.3g} | "
              f"[{row['ci'][0]:.3g}, {row['ci'][1]:.3g}] | {row['n']} | {row['verdict']} |")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(json_safe({"seconds": seconds, "rows": result.rows, "timings": result.timings}), fh, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="store_true", help="time geometry.compare instead")
    parser.add_argument("--points", type=int, default=100, help="points of --compare (default 100)")
    parser.add_argument("--cache-dir", default="/tmp/advlab-geometry-bench", help="trained runs of --compare")
    parser.add_argument("--k", type=int, default=20, help="eigenvalues wanted (default 20)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="Lanczos HVPs (default: advlab's default_steps, 100 for k=20)")
    parser.add_argument("--train-steps", type=int, default=100, help="Adam steps before measuring")
    parser.add_argument("--beta", type=float, default=5.0, help="Softplus beta of the smooth case")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        compare_benchmark(args.points, args.cache_dir, args.seed, args.json)
        return
    if args.iterations is None:
        args.iterations = default_steps(28 * 28, args.k)
    model, x, y, source = load_point(args.train_steps, args.seed)
    dtype = getattr(torch, args.dtype)
    model, x = model.to(dtype), x.to(dtype)
    print(f"small_cnn on {source} (label {int(y[0])}, predicted {int(model(x).argmax())}), "
          f"{args.dtype}, top-{args.k} by magnitude, Lanczos with {args.iterations} HVPs\n")
    rows = run_case("small_cnn (ReLU)", model, x, y, args.k, args.iterations, args.seed)
    rows += run_case(f"Softplus(beta={args.beta:g})", smooth_copy(model, args.beta), x, y, args.k,
                     args.iterations, args.seed)
    print_table(rows, args.k)
    lanczos_rows = [r for r in rows if r["method"].startswith("lanczos")]
    ok = all(r["hvps"] <= 100 and r["max_rel_error"] <= 1e-3 for r in lanczos_rows)
    print(f"\nLanczos target (<= 100 HVPs, <= 1e-3 relative error on the nonzero top-{args.k}): "
          f"{'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(json_safe(rows), fh, indent=2)


if __name__ == "__main__":
    main()
