"""Certified robustness on Fashion-MNIST: randomized smoothing of a noise-trained small_cnn.

Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): for each ``sigma`` in ``--sigmas``
(0.25, 0.5) a ``small_cnn`` is trained with Gaussian noise of that ``sigma`` (advlab's ``noise``
objective with ``clip=False``: ``x + noise`` is not clipped to [0, 1], as Cohen et al. train and
as certification draws it; ``--clipped-noise`` trains on the clipped noise of the defense's
default) and cached under ``--cache-dir``. The first ``--points`` test points (500) are certified
with CERTIFY (n0 = 100, N = ``--n`` = 10 000, alpha = 0.001); the script prints the certified
accuracy at L2 radii 0.25 / 0.5 / 0.75 / 1.0 with 95 % Clopper-Pearson intervals, the abstention
rate and the time. Where ``adversarial-robustness-toolbox`` is importable (the benchmark
environment, ``benchmarks/.venv-peers``), ART's ``PyTorchRandomizedSmoothing`` certifies the same
model on the first ``--art-points`` of those points with the same n0, N and alpha, and advlab's
figures on those same points are printed beside it (the certified accuracies should agree within
the Monte-Carlo intervals); otherwise it is skipped and the script says so.

    python benchmarks/certify.py                                   # the full run (~1.5 h on 1 core)
    python benchmarks/certify.py --points 50 --n 1000              # a few minutes
    python benchmarks/certify.py --sigmas 0.25 --threads 2 --json certify.json

``--part`` selects what runs; each part is one entry of :data:`PARTS`: ``smoothing``;
``soundness`` (the same models: certified points attacked within their radius on the smoothed
classifier, never broken if the certificate is sound);
``ibp`` (IBP-certified vs PGD/APGD robust accuracy at Linf eps 0.1 of an IBP-trained
small_cnn, Gowal et al. 2018); ``occlusion`` (accuracy under the worst black square of side
4 / 8 / 12 of a standard and a PGD-AT small_cnn). Their models are trained briefly
(``--short-epochs``) by ``advlab.experiments.runs.train_run`` into ``--cache-dir``. Never part of the test suite; timings only
mean something on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

import advlab
from advlab.certify import RADII, certified_accuracy_table, smooth_certify
from advlab.data import load_dataset
from advlab.models import create_model, load_model
from advlab.training import fit, get_objective

LOG = logging.getLogger("benchmarks.certify")
REPORTED_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def noise_trained_model(args: argparse.Namespace, sigma: float, device: str) -> tuple[nn.Module, float | None]:
    """The cached noise-trained small_cnn for ``sigma``, trained first if absent (seed 0).

    Returns ``(model, training seconds)``; ``None`` seconds when it came from the cache.
    """
    kind = "noise" if args.clipped_noise else "unclipped"
    run_dir = (Path(args.cache_dir) / "certify"
               / f"small_cnn-{kind}-{sigma:g}-{args.train_samples}-{args.epochs}ep")
    if (run_dir / "model.safetensors").exists():
        LOG.info("loading %s", run_dir)
        return load_model(run_dir, device=device), None
    train = load_dataset("fashion-mnist", split="train", n=args.train_samples or None, seed=0)
    model = create_model("small_cnn", train.num_classes, train.input_shape, seed=0)
    objective = get_objective("noise", sigma=sigma, clip=args.clipped_noise)
    LOG.info("training %s on %d images for %d epochs -> %s", kind, len(train), args.epochs, run_dir)
    start = time.perf_counter()
    result = fit(model, train, objective=objective, epochs=args.epochs, lr=2e-3, seed=0,
                 device=device, run_dir=run_dir, progress=False,
                 config={"dataset": "fashion-mnist", "sigma": sigma, "noise": kind})
    return result.model.eval(), time.perf_counter() - start


def _art_certify(model: nn.Module, x: Tensor, sigma: float, args: argparse.Namespace) -> dict[str, Any]:
    """ART's randomized smoothing on the same model and points (only where ART is importable)."""
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        return {"skipped": "adversarial-robustness-toolbox is not importable here"}
    clf = PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
        sample_size=args.n0, scale=sigma, alpha=args.alpha, clip_values=(0.0, 1.0),
        device_type="gpu" if x.is_cuda else "cpu")
    start = time.perf_counter()
    prediction, radius = clf.certify(x.cpu().numpy(), n=args.n, batch_size=args.batch_size)
    return {"seconds": time.perf_counter() - start,
            "prediction": torch.as_tensor(prediction).long(), "radius": torch.as_tensor(radius).float()}


def _art_rows(art: dict[str, Any], cert: Any, y: Tensor) -> list[dict[str, Any]]:
    """ART's certified accuracy per radius next to advlab's on the same points, each with a 95 %
    Clopper-Pearson interval, and whether the two intervals overlap."""
    from advlab.stats import accuracy_with_interval

    rows = []
    for r in REPORTED_RADII:
        art_correct = (art["prediction"] == y.cpu()) & (art["radius"] >= r)
        ours = (cert.prediction.cpu() == y.cpu()) & (cert.radius.cpu() >= r)
        a = accuracy_with_interval(int(art_correct.sum()), len(y), radius=r)
        o = accuracy_with_interval(int(ours.sum()), len(y), radius=r)
        rows.append({"radius": r, "art": a.to_dict(), "advlab": o.to_dict(),
                     "intervals_overlap": bool(a.low <= o.high and o.low <= a.high)})
    return rows


def smoothing_part(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Certify the first ``--points`` test points for every sigma; print and return the figures."""
    test = load_dataset("fashion-mnist", split="test")
    x, y = test.x[: args.points].to(device), test.y[: args.points].to(device)
    figures: dict[str, Any] = {}
    for sigma in args.sigmas:
        model, train_seconds = noise_trained_model(args, sigma, device)
        start = time.perf_counter()
        cert = smooth_certify(model, x, sigma=sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                              batch_size=args.batch_size,
                              generator=torch.Generator(device=device).manual_seed(0))
        seconds = time.perf_counter() - start
        rows = certified_accuracy_table(cert, y, sorted({*REPORTED_RADII, *RADII}))
        entry: dict[str, Any] = {
            "train_seconds": train_seconds, "certify_seconds": seconds,
            "seconds_per_point": seconds / len(x),
            "abstain": (cert.prediction == -1).float().mean().item(),
            "rows": [row.to_dict() for row in rows]}
        print(f"\nsigma = {sigma:g}: {cert!r}")
        print(f"  certify {len(x)} points x (n0={args.n0} + N={args.n}) draws: {seconds:.1f} s "
              f"({seconds / len(x):.3f} s per point)"
              + (f"; training {train_seconds:.0f} s" if train_seconds is not None else "; cached model"))
        for row in rows:
            if row.radius in REPORTED_RADII:
                print(f"  radius {row.radius:4.2f}: certified accuracy {row.accuracy:.3f} "
                      f"[{row.low:.3f}, {row.high:.3f}]  ({row.correct}/{row.total})")
        if not args.no_art:
            k = min(args.art_points, len(x))
            art = _art_certify(model, x[:k], sigma, args)
            if "skipped" in art:
                print(f"  ART: skipped ({art['skipped']})")
                entry["art"] = art
            else:
                ours = SimpleNamespace(prediction=cert.prediction[:k], radius=cert.radius[:k])
                entry["art"] = {"points": k, "seconds": art["seconds"],
                                "advlab_seconds_same_points": seconds * k / len(x),
                                "rows": _art_rows(art, ours, y[:k])}
                print(f"  ART on the first {k} points: {art['seconds']:.1f} s "
                      f"({art['seconds'] / k:.3f} s per point, advlab {seconds / len(x):.3f})")
                for row in entry["art"]["rows"]:
                    a, o = row["art"], row["advlab"]
                    print(f"    radius {row['radius']:4.2f}: ART {a['accuracy']:.3f} [{a['low']:.3f}, "
                          f"{a['high']:.3f}]  advlab {o['accuracy']:.3f} [{o['low']:.3f}, {o['high']:.3f}]"
                          f"  {'intervals overlap' if row['intervals_overlap'] else 'DIFFERENT'}")
        figures[f"{sigma:g}"] = entry
    return figures


def soundness_part(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Soundness of smoothing on Fashion-MNIST: the first ``--soundness-points`` test points are
    certified (n0, N, alpha as above) and attacked at every radius by L2 PGD on the soft smoothed
    classifier (SmoothAdv-style, :func:`advlab.certify.compare_smoothing`), the attacked points
    judged by PREDICT; prints certified vs empirical accuracy and the points certified at r but
    broken within r (a sound certificate: 0, up to alpha)."""
    from advlab.certify import compare_smoothing

    test = load_dataset("fashion-mnist", split="test")
    x, y = test.x[: args.soundness_points].to(device), test.y[: args.soundness_points].to(device)
    figures: dict[str, Any] = {}
    for sigma in args.sigmas:
        model, _ = noise_trained_model(args, sigma, device)
        start = time.perf_counter()
        result = compare_smoothing(model, x, y, sigma=sigma, radii=REPORTED_RADII, n0=args.n0, n=args.n,
                                   alpha=args.alpha, batch_size=args.batch_size,
                                   attack_steps=args.attack_steps, eot_samples=16, predict_n=1000,
                                   generator=torch.Generator(device=device).manual_seed(0))
        result["seconds"] = time.perf_counter() - start
        print(f"\nsigma = {sigma:g}, {len(x)} points, PGD-{args.attack_steps} on the soft smoothed "
              f"classifier (16 draws), PREDICT with 1000 draws: {result['seconds']:.0f} s")
        for row in result["rows"]:
            c, e = row["certified"], row["empirical"]
            print(f"  radius {row['radius']:4.2f}: certified {c['accuracy']:.3f} [{c['low']:.3f}, "
                  f"{c['high']:.3f}]  empirical {e['accuracy']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
                  f"  certified but broken: {row['certified_but_broken']}")
        figures[f"{sigma:g}"] = result
    return figures


def _cached_run(args: argparse.Namespace, model: str, defense: str, params: dict[str, Any],
                device: str) -> nn.Module:
    """A ``model`` trained briefly on Fashion-MNIST with ``defense`` by
    :func:`advlab.experiments.runs.train_run`, cached under ``--cache-dir``."""
    from advlab.experiments.runs import train_run

    tag = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(params.items()))
    run_dir = (Path(args.cache_dir) / "certify"
               / f"{model}-{defense}-{tag}-{args.train_samples}-{args.short_epochs}ep")
    if not (run_dir / "model.safetensors").exists():
        LOG.info("training %s -> %s", defense, run_dir)
        start = time.perf_counter()
        train_run(run_dir, dataset="fashion-mnist", model=model, defense=defense,
                  defense_params=params, epochs=args.short_epochs, n_train=args.train_samples or None,
                  seed=0, device=device, adv_val=False, progress=False)
        LOG.info("trained in %.0f s", time.perf_counter() - start)
    return load_model(run_dir, device=device).eval()


def _pgd_on_certified(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> int:
    """How many IBP-certified points PGD breaks at ``eps`` (a sound certificate: 0)."""
    from advlab import ThreatModel
    from advlab.attacks import pgd
    from advlab.certify import ibp_certify

    certified = ibp_certify(model, x, y, eps)
    if not certified.any():
        return 0
    x_adv = pgd(model, x[certified], y[certified], ThreatModel("linf", eps), steps=50, restarts=5,
                generator=torch.Generator(device=x.device).manual_seed(0))
    with torch.no_grad():
        return int((model(x_adv).argmax(dim=1) != y[certified]).sum())


def ibp_part(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """IBP-certified vs APGD (evaluate "fast") robust accuracy at Linf eps 0.1 of an IBP-trained
    ``--ibp-model`` (Gowal et al. 2018: trained at 1.1 x the certified eps; the ramp is longer
    than the paper's 1/6 of the steps, which collapsed a 3-epoch small_cnn to chance)."""
    from advlab.certify.compare import compare_ibp

    model = _cached_run(args, args.ibp_model, "ibp", {"eps": 0.11, "warmup": 0.1, "ramp": 0.6}, device)
    test = load_dataset("fashion-mnist", split="test")
    x, y = test.x[: args.points].to(device), test.y[: args.points].to(device)
    start = time.perf_counter()
    result = compare_ibp(model, x, y, eps=[0.1], preset="fast")
    result["seconds"] = time.perf_counter() - start
    result["pgd_breaks_certified"] = _pgd_on_certified(model, x, y, 0.1)
    print(f"  PGD (50 steps, 5 restarts) on the IBP-certified points at eps 0.1: "
          f"{result['pgd_breaks_certified']} broken")
    for row in result["rows"]:
        c, e = row["certified"], row["empirical"]
        print(f"  Linf eps {row['radius']:g}: IBP certified {c['accuracy']:.3f} [{c['low']:.3f}, "
              f"{c['high']:.3f}] ({c['correct']}/{c['total']}); robust (evaluate fast) "
              f"{e['accuracy']:.3f} [{e['low']:.3f}, {e['high']:.3f}]; certified but broken: "
              f"{row['certified_but_broken']}")
    return result


def occlusion_part(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Occlusion robust accuracy (black squares, stride 2) of a standard and a PGD-AT small_cnn
    (Linf eps 0.1, 3 steps)."""
    from advlab.attacks import occlusion_accuracy

    test = load_dataset("fashion-mnist", split="test")
    x, y = test.x[: args.points].to(device), test.y[: args.points].to(device)
    figures: dict[str, Any] = {}
    for name, defense, params in (("standard", "none", {}),
                                  ("pgd-at", "pgd-at", {"eps": 0.1, "steps": 3})):
        model = _cached_run(args, "small_cnn", defense, params, device)
        figures[name] = {}
        for size in (4, 8, 12):
            start = time.perf_counter()
            acc = occlusion_accuracy(model, x, y, size=size, stride=2, fill="black")
            figures[name][str(size)] = {**acc.to_dict(), "seconds": time.perf_counter() - start}
            print(f"  {name:>8}: {acc}  {figures[name][str(size)]['seconds']:.1f} s")
    return figures


PARTS: dict[str, Callable[[argparse.Namespace, str], dict[str, Any]]] = {
    "smoothing": smoothing_part,
    "soundness": soundness_part,
    "ibp": ibp_part,
    "occlusion": occlusion_part,
}
"""The benchmark's parts, run in this order by ``--part all``; each returns its JSON figures."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--points", type=int, default=500, help="test points certified")
    parser.add_argument("--n", type=int, default=10_000, help="estimation draws N per point")
    parser.add_argument("--n0", type=int, default=100, help="selection draws per point")
    parser.add_argument("--soundness-points", type=int, default=100,
                        help="points of the soundness part (certified, then attacked at every radius)")
    parser.add_argument("--attack-steps", type=int, default=20, help="PGD steps of the soundness part")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    parser.add_argument("--sigmas", type=lambda s: [float(v) for v in s.split(",")],
                        default=[0.25, 0.5], help="comma-separated noise levels")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy inputs per forward pass")
    parser.add_argument("--epochs", type=int, default=3, help="noise-training epochs")
    parser.add_argument("--train-samples", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--short-epochs", type=int, default=2,
                        help="epochs of the ibp and occlusion parts' models")
    parser.add_argument("--ibp-model", default="mlp", help="zoo model of the ibp part (mlp, small_cnn)")
    parser.add_argument("--clipped-noise", action="store_true",
                        help="train on x + noise clipped to [0, 1] (default: unclipped, as Cohen et al.)")
    parser.add_argument("--art-points", type=int, default=100,
                        help="points (the first of --points) that ART certifies for comparison")
    parser.add_argument("--no-art", action="store_true", help="skip the ART comparison")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--cache-dir", default="runs/benchmarks", help="where trained models are cached")
    parser.add_argument("--json", default=None, help="write all figures and settings to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    print(f"advlab {advlab.__version__}, torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {args.device}; settings {settings}")
    result: dict[str, Any] = {"settings": settings, "torch": torch.__version__}
    for name, part in PARTS.items():
        if args.part in (name, "all"):
            start = time.perf_counter()
            result[name] = part(args, args.device)
            print(f"part {name}: {time.perf_counter() - start:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
