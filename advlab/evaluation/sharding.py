"""Batch-wise evaluation: sharded over the ranks of a process group, resumable and streaming.

The points are cut into global batches of ``batch_size`` (:mod:`advlab.evaluation.streaming`).
Every batch is evaluated on its own, as :func:`advlab.evaluate` evaluates all points (clean pass,
the ensemble at every eps with adversarial examples pooled across eps), every point drawing its
randomness from its own stream keyed by ``seed`` and the point's global index
(:class:`advlab.streams.PointStreams`). A batch's result therefore depends neither on which rank
evaluates it nor on the other batches, so at a given batch size ``robust_correct`` is
bit-identical for any world size, and a resumed run equals an uninterrupted one. Across batch
sizes a point gets the same random numbers; what can still differ is floating-point rounding of
another batch shape and the batch-level decisions of a preset (``standard``'s target patience
and Square escalation look at the whole batch).

Ranks take the batches round-robin (whole batches, :mod:`advlab.evaluation.rounds`; a rank reads
only its own batches when the data can be indexed); after each round the per-sample results are
gathered (``all_gather_object``), rank 0 commits them to the checkpoint sidecar
(:mod:`advlab.evaluation.resume`), and at the end rank 0 builds the results, writes the store rows
and broadcasts the results to every rank. The sanity checks that look at a sample of points
(gradient flags, randomness, the large-eps and monotonicity checks) use global batch 0.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import advlab
from advlab._dist import DistContext, broadcast_object, current_context
from advlab._predicates import looks_like_probabilities
from advlab.attacks._core import check_inputs, check_logits, model_guard, predict
from advlab.evaluation.ensemble import (
    EnsembleOutcome,
    Pool,
    Progress,
    StepStats,
    attack_one_eps,
    recheck_smaller_eps,
)
from advlab.evaluation.kernels import Kernels, accelerate
from advlab.evaluation.presets import AttackStep, resolve_ensemble
from advlab.evaluation.result import EvaluationResult, fingerprint_data, fingerprint_model
from advlab.evaluation.resume import Checkpoint
from advlab.evaluation.rounds import first_batch, run_rounds
from advlab.evaluation.sanity import Flag, chance_flag
from advlab.evaluation.streaming import Batch, Indexed
from advlab.streams import PointStreams
from advlab.threat import ThreatModel

logger = logging.getLogger(__name__)


@dataclass
class Setup:
    """What every batch shares: the attacks, the model to attack and the flags seen before."""

    ensemble: list[AttackStep]
    attack_model: nn.Module
    flags: list[Flag]
    suspicious: bool
    first: Batch
    correct_first: Tensor


@dataclass
class Options:
    """The options of :func:`advlab.evaluate` that the batch-wise engine uses."""

    threat: ThreatModel
    eps_list: list[float]
    attacks: str | list[AttackStep]
    batch_size: int
    seed: int
    sanity: bool
    eot_samples: int
    device: torch.device
    kernels: Kernels


def _prepared(batch: Batch, model: nn.Module, options: Options) -> Batch:
    """The batch in the model's dtype on the device, checked against the threat's bounds."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    x = batch.x.to(dtype) if dtype is not None and batch.x.is_floating_point() else batch.x
    check_inputs(x, batch.y, options.threat)
    return Batch(batch.index, batch.start, x.to(options.device), batch.y.to(options.device))


def _setup(model: nn.Module, first: Batch, options: Options, context: DistContext,
           prepare: Callable) -> Setup:
    """Clean pass and sanity checks on global batch 0; rank 0's flags are everyone's."""
    with model_guard(model):
        logits = predict(model, first.x, options.batch_size)
        check_logits(logits, first.y)
    correct = logits.argmax(dim=1) == first.y
    flags = [Flag("probabilities", "rows of the output sum to 1")] if looks_like_probabilities(logits) else []
    ensemble = resolve_ensemble(options.attacks, logits.shape[1], options.threat.norm)
    attack_model, ensemble, more, suspicious = prepare(model, first.x, first.y, correct, ensemble)
    flags += more
    flags, suspicious = broadcast_object((flags, suspicious), context)
    attack_model = accelerate(attack_model, options.kernels, example=first.x[:1])
    return Setup(ensemble, attack_model, flags, suspicious, first, correct)


def _run_batch(model: nn.Module, setup: Setup, batch: Batch, options: Options) -> dict[str, Any]:
    """Evaluate one global batch, each point drawing from its own stream; a JSON-safe per-sample record."""
    generator = PointStreams(options.seed, batch.start, len(batch.x), device=options.device)
    x, y = batch.x, batch.y
    with model_guard(model):
        logits = predict(model, x, options.batch_size)
    correct = logits.argmax(dim=1) == y
    pool = Pool.empty(x)
    per_eps = []
    for k, eps_k in enumerate(options.eps_list):
        threat_k = options.threat.with_eps(eps_k)
        outcome = attack_one_eps(model, setup.attack_model, x, y, threat_k, setup.ensemble, pool,
                                 correct, batch_size=options.batch_size, generator=generator,
                                 suspicious=setup.suspicious)
        if options.sanity and k > 0 and batch.index == 0:
            recheck_smaller_eps(model, setup.attack_model, x, y, threat_k, setup.ensemble[0], pool,
                                options.eps_list[k - 1], sample=32, batch_size=options.batch_size,
                                generator=generator, outcome=outcome)
        per_eps.append({"per_attack": {name: [s.ran_on, s.breaks, s.time_s] for name, s in outcome.per_attack.items()},
                        "blackbox": outcome.blackbox_breaks, "recheck_failed": outcome.recheck_failed,
                        "recheck_total": outcome.recheck_total})
    return {"batch": batch.index, "start": batch.start, "data_id": fingerprint_data(x, y),
            "correct": correct.tolist(), "distance": pool.distance.tolist(), "attack": pool.attack,
            "eps": per_eps}


def _header(model: nn.Module, options: Options, n: int | None) -> dict[str, Any]:
    """Everything a resumed run must share with the checkpoint it continues."""
    threat = options.threat
    preset = options.attacks if isinstance(options.attacks, str) else [s.name for s in options.attacks]
    return {"model_id": fingerprint_model(model), "norm": threat.norm, "bounds": list(threat.bounds),
            "eps": options.eps_list, "preset": preset, "seed": options.seed,
            "batch_size": options.batch_size, "n": n, "sanity": options.sanity,
            "kernels": options.kernels.describe(), "version": advlab.__version__}


def _loop(model: nn.Module, source: Indexed | Iterator[Batch], first: Batch, setup: Setup,
          options: Options, context: DistContext, checkpoint: Checkpoint | None,
          progress: Progress | None) -> dict[int, dict[str, Any]]:
    """Evaluate the batches not yet done (:func:`~advlab.evaluation.rounds.run_rounds`); the
    records of all batches (on rank 0)."""
    done = broadcast_object(set(checkpoint.done) if checkpoint else set(), context)
    records: dict[int, dict[str, Any]] = dict(checkpoint.done) if checkpoint else {}

    def evaluate_one(raw: Batch) -> dict[str, Any]:
        return _run_batch(model, setup, _prepared(raw, model, options), options)

    def check_one(raw: Batch) -> None:
        batch = _prepared(raw, model, options)
        checkpoint.check_data(raw.index, fingerprint_data(batch.x, batch.y))

    run_rounds(source, first, context=context, done=done, checkpoint=checkpoint, records=records,
               progress=progress, evaluate_one=evaluate_one, check_one=check_one)
    return records


def _sum_outcomes(records: list[dict[str, Any]], k: int, eps: float) -> EnsembleOutcome:
    outcome = EnsembleOutcome(eps=eps)
    for record in records:
        part = record["eps"][k]
        for name, (ran_on, breaks, spent) in part["per_attack"].items():
            stats = outcome.per_attack.setdefault(name, StepStats())
            stats.ran_on, stats.breaks, stats.time_s = stats.ran_on + ran_on, stats.breaks + breaks, stats.time_s + spent
        outcome.blackbox_breaks += part["blackbox"]
        outcome.recheck_failed += part["recheck_failed"]
        outcome.recheck_total += part["recheck_total"]
    return outcome


def _results(model: nn.Module, records: dict[int, dict[str, Any]], setup: Setup, options: Options,
             flags_after: Callable, meta: dict[str, Any]) -> list[EvaluationResult]:
    """One result per eps from the per-batch records, in global point order."""
    ordered = [records[i] for i in sorted(records)]
    dtype = setup.first.x.dtype if setup.first.x.is_floating_point() else torch.float32
    correct = torch.tensor([c for r in ordered for c in r["correct"]], dtype=torch.bool)
    distance = torch.tensor([d for r in ordered for d in r["distance"]], dtype=dtype)
    attack = [a for r in ordered for a in r["attack"]]
    threats = [options.threat.with_eps(e) for e in options.eps_list]
    outcomes = [_sum_outcomes(ordered, k, e) for k, e in enumerate(options.eps_list)]
    flags = list(setup.flags)
    if options.sanity:
        flags += chance_flag(correct.float().mean().item(), _num_classes(setup), len(correct))
        generator = torch.Generator(device=options.device).manual_seed(options.seed)
        first = setup.first
        flags += flags_after(model, first.x, first.y, options.threat, setup.correct_first,
                             list(zip(threats, outcomes)), generator=generator,
                             ensemble=setup.ensemble, randomized=False,
                             suspicious=setup.suspicious)
    data_id = hashlib.sha256("".join(r["data_id"] for r in ordered).encode()).hexdigest()[:16]
    meta = {**meta, "n": len(correct), "data_id": data_id}
    results = []
    for threat_k, outcome in zip(threats, outcomes):
        eps = torch.full_like(distance, threat_k.eps)
        broken = (distance <= eps * (1 + 1e-5) + 1e-6) & correct
        robust = correct & ~broken
        broken_by = [("clean" if not c else (a if b else None))
                     for c, a, b in zip(correct.tolist(), attack, broken.tolist())]
        per_attack = {name: {"ran_on": s.ran_on, "breaks": s.breaks, "time_s": s.time_s}
                      for name, s in outcome.per_attack.items()}
        results.append(EvaluationResult(
            norm=threat_k.norm, eps=outcome.eps, clean_accuracy=correct.float().mean().item(),
            robust_accuracy=robust.float().mean().item(), clean_correct=correct,
            robust_correct=robust, broken_by=broken_by,
            distance=torch.where(correct, distance, torch.zeros_like(distance)),
            per_attack=per_attack, warnings=[f.to_dict() for f in flags], x_adv=None, **meta))
    return results


def _num_classes(setup: Setup) -> int:
    with model_guard(setup.attack_model), torch.no_grad():
        return int(setup.attack_model(setup.first.x[:1]).shape[1])


def evaluate_sharded(model: nn.Module, data: Any, y: Any, threat: ThreatModel, *,
                     attacks: str | list[AttackStep], eps: Sequence[float] | None, batch_size: int,
                     device: torch.device, seed: int, n: int | None, sanity: bool,
                     eot_samples: int, progress: Progress | None, kernels: Kernels,
                     checkpoint: str | Path | None, resume: bool, prepare: Callable,
                     flags_after: Callable, write_store: Callable[[list[EvaluationResult]], None]
                     ) -> list[EvaluationResult]:
    """The batch-wise engine behind :func:`advlab.evaluate` (see the module docstring).

    Returns one result per eps (ascending) on every rank; ``x_adv`` is None (not kept, so that
    memory stays bounded by the batch). ``write_store`` runs on rank 0 only.
    """
    if isinstance(threat.eps, Tensor):
        raise ValueError("a per-sample eps tensor is not supported by the batch-wise evaluation "
                         "(process groups, resume, streaming): pass eps=[...] floats")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH (the sidecar file of finished batches)")
    context = current_context()
    eps_list = sorted(float(e) for e in eps) if eps is not None else [float(threat.eps)]
    options = Options(threat, eps_list, attacks, batch_size, seed, sanity, eot_samples, device, kernels)
    start = time.perf_counter()
    source, first_raw = first_batch(data, y, batch_size=batch_size, n=n, context=context)
    setup = _setup(model, _prepared(first_raw, model, options), options, context, prepare)
    store = None
    if checkpoint is not None and context.is_main:
        store = Checkpoint(checkpoint, _header(model, options, n), resume=resume)
    records = _loop(model, source, first_raw, setup, options, context, store, progress)
    results = None
    if context.is_main:
        meta = dict(preset=attacks if isinstance(attacks, str) else "custom",
                    time_s=time.perf_counter() - start, seed=seed, model_id=fingerprint_model(model),
                    version=advlab.__version__, bounds=threat.bounds,
                    extras={"engine": "batches", "world_size": context.world_size,
                            "batch_size": batch_size, "kernels": kernels.describe()})
        results = _results(model, records, setup, options, flags_after, meta)
        for r in results:
            r.extras = dict(r.extras)
            logger.info("%s", r.summary())
        write_store(results)
        if store is not None:
            store.remove()
    return broadcast_object(results, context)


def use_batches(batches: bool | None, data: Any, *, checkpoint: Any, resume: bool) -> bool:
    """Whether :func:`advlab.evaluate` takes the batch-wise engine (see its ``batches=``)."""
    from advlab.evaluation.streaming import in_memory

    if batches is not None:
        if not batches and (checkpoint is not None or resume):
            raise ValueError("checkpoint/resume need the batch-wise evaluation: drop batches=False")
        return batches
    if current_context().enabled or checkpoint is not None or resume:
        return True
    try:
        return in_memory(data) is None and not isinstance(data, Tensor)
    except ValueError:  # tensors given without y in data: the plain path reports it
        return False
