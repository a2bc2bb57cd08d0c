"""The per-point half of :func:`advlab.geometry.compare`: blocks of points, sharded over ranks.

The points are cut into blocks of ``batch_size`` (global block ``b`` holds points
``b * batch_size ...``). Inside a process group the ranks take whole blocks round-robin
(:func:`advlab.evaluation.rounds.run_rounds`, as the sharded evaluation does), measure every
quantity of both models on their points, and rank 0 gathers the blocks in point order.

Randomness: with a seed, every point draws from its own stream seeded from the seed and its global
index (:class:`~advlab.streams.PointStreams`), so a point's values depend neither on the
rank nor on the world size (at a given ``batch_size``: a different block shape may round
differently). Without one (``generator=None``), draws come from torch's global RNG of each rank,
as before: reproducible only through ``torch.manual_seed`` in one process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advlab._dist import DistContext
from advlab.attacks._core import model_guard, predict
from advlab.evaluation.rounds import run_rounds
from advlab.evaluation.streaming import Batch, indexed_batches
from advlab.geometry import compare_measures as measures
from advlab.geometry._common import Randomness, random_normal
from advlab.geometry.lanczos import hessian_eigs
from advlab.geometry.scale import confidence_normalised, scale_hessian_eigs
from advlab.streams import PointStreams

Record = dict[str, Any]


def measure_model(model: nn.Module, x: Tensor, y: Tensor, second: Tensor, quantities: Sequence[str],
                  options: dict[str, Any], generator: Randomness,
                  timings: dict[str, float]) -> dict[str, Any]:
    """Every requested quantity of one model on the points ``x`` ``(B, ...)``: ``(B,)`` each."""
    values: dict[str, Any] = {}

    def timed(name: str, fn: Any) -> None:
        started = time.perf_counter()
        values[name] = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

    info = measures.deepfool_info(model, x, y)
    norms = torch.where(info.success, info.norm, torch.full_like(info.norm, float("nan"))).double().cpu()
    direction = info.x_adv - x
    h, steps = options["h"], options["steps"]
    wanted = set(quantities)
    if "minimal_l2" in wanted:
        values["minimal_l2"] = norms
    if "top_eigenvalue" in wanted:
        timed("top_eigenvalue", lambda: scale_hessian_eigs(model, x, y, 1, h=h, steps=steps,
                                                           generator=generator)[:, 0].double().cpu())
    if wanted & {"top_eigenvalue_pointwise", "top_eigenvalue_normalised"}:
        pointwise = hessian_eigs(model, x, y, 1, steps=steps, which="LA", generator=generator)[0][:, 0]
        values["top_eigenvalue_pointwise"] = pointwise.double().cpu()
        values["top_eigenvalue_normalised"] = confidence_normalised(model, x, y, pointwise).double().cpu()
    if "hessian_frobenius" in wanted:
        started = time.perf_counter()
        value, error, method = measures.frobenius(model, x, y, samples=options["hutchinson_samples"],
                                                  generator=generator)
        values["hessian_frobenius"], values["hessian_frobenius_error"] = value.cpu(), error.cpu()
        values["_frobenius_method"] = method
        timings["hessian_frobenius"] = timings.get("hessian_frobenius", 0.0) + time.perf_counter() - started
    if "boundary_curvature" in wanted:
        timed("boundary_curvature", lambda: measures.boundary_curvatures(
            model, x, direction, norms, second, resolution=options["resolution"]).cpu())
    if "noise_ratio" in wanted:
        for clip in (True, False):
            key = "noise_ratio" if clip == options["clip"] else ("noise_ratio_clipped" if clip else "noise_ratio_unclipped")
            timed(key, lambda clip=clip: measures.noise_distances(
                model, x, y, directions=options["directions"], clip=clip, generator=generator) / norms)
    if "adversarial_vs_random_curvature" in wanted:
        safe = torch.where((direction.flatten(1).norm(dim=1) > 0)[(...,) + (None,) * (x.dim() - 1)],
                           direction, second)
        timed("adversarial_vs_random_curvature", lambda: measures.curvature_ratio(
            model, x, y, safe, h=h, generator=generator).cpu())
    return values


def measure_block(models: Sequence[nn.Module], labels: Sequence[str], batch: Batch,
                  quantities: Sequence[str], options: dict[str, Any], seed: int | None) -> Record:
    """Both models' per-point values on one block, with the block's per-point streams (``seed``)
    or torch's global RNG (``seed=None``); CPU tensors, ready to gather."""
    x, y = batch.x, batch.y
    with model_guard(models[0]), model_guard(models[1]):
        correct = (predict(models[0], x).argmax(1) == y) & (predict(models[1], x).argmax(1) == y)
    randomness: Randomness = None
    if seed is None:
        second = torch.randn(x.shape, device="cpu", dtype=x.dtype).to(x.device)
    else:
        randomness = PointStreams(seed, batch.start, len(x), device=x.device)
        second = random_normal(tuple(x.shape), generator=randomness, device=x.device, dtype=x.dtype)
    timings: dict[str, float] = {}
    values = {label: measure_model(model, x, y, second, quantities, options, randomness, timings)
              for label, model in zip(labels, models)}
    return {"batch": batch.index, "start": batch.start, "correct": correct.cpu(), "values": values,
            "timings": timings}


def measure_points(models: Sequence[nn.Module], labels: Sequence[str], x: Tensor, y: Tensor, *,
                   quantities: Sequence[str], options: dict[str, Any], seed: int | None,
                   batch_size: int, context: DistContext) -> tuple[Tensor, dict[str, dict[str, Any]], dict[str, float]] | None:
    """``(correct (N,), per_point[label][name] (N,), timings)`` on rank 0 (None elsewhere):
    blocks of ``batch_size`` round-robin over the ranks, gathered in point order."""
    source = indexed_batches(x, y, batch_size=batch_size)
    assert source is not None  # tensors are always read by index
    records: dict[int, Record] = {}
    run_rounds(source, next(source.read([0])), context=context, done=set(), checkpoint=None,
               records=records, progress=None,
               evaluate_one=lambda batch: measure_block(models, labels, batch, quantities, options, seed),
               check_one=lambda batch: None)
    if not context.is_main:
        return None
    ordered = [records[i] for i in sorted(records)]
    correct = torch.cat([r["correct"] for r in ordered])
    per_point: dict[str, dict[str, Any]] = {}
    for label in labels:
        keys = ordered[0]["values"][label]
        per_point[label] = {key: (ordered[0]["values"][label][key] if key.startswith("_")
                                  else torch.cat([r["values"][label][key] for r in ordered])) for key in keys}
    timings: dict[str, float] = {}
    for record in ordered:
        for name, spent in record["timings"].items():
            timings[name] = timings.get(name, 0.0) + spent
    return correct, per_point, timings
