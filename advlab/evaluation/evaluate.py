"""``advlab.evaluate``: robust accuracy as the per-sample worst case over an attack ensemble.

The standard to meet is AutoAttack (Croce & Hein 2020): run diverse, parameter-free attacks,
each only on the points still robust, count a point as broken as soon as one verified adversarial
example exists, and check for the signs of gradient masking listed by Athalye, Carlini & Wagner
(2018). Several eps are evaluated in one call, pooling adversarial examples across eps.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import advlab
from advlab._checks import check_int
from advlab._predicates import looks_like_probabilities
from advlab._utils import resolve_device
from advlab.attacks._core import check_inputs, check_logits, model_guard, predict
from advlab.evaluation.adaptive import EOT, adapt
from advlab.evaluation.draws import Judge, mean_interval
from advlab.evaluation.ensemble import Pool, Progress, attack_one_eps, recheck_smaller_eps
from advlab.evaluation.indicators import indicator_flags
from advlab.evaluation.kernels import (
    Kernels,
    accelerate,
    default_channels_last,
    default_micro_batch,
)
from advlab.evaluation.presets import AttackStep, resolve_ensemble
from advlab.evaluation.result import EvaluationResult, fingerprint_data, fingerprint_model
from advlab.evaluation.sanity import (
    MASKING,
    Flag,
    chance_flag,
    gradient_flags,
    is_randomized,
)
from advlab.evaluation.sharding import evaluate_sharded, use_batches
from advlab.evaluation.streaming import as_labels, in_memory
from advlab.streams import PointStreams
from advlab.threat import ThreatModel, per_sample_view

logger = logging.getLogger(__name__)
__all__ = ["EOT", "collect_data", "evaluate"]


def collect_data(data: Any, y: Any = None) -> tuple[Tensor, Tensor]:
    """``(x, y)`` tensors, y int64, from tensors or numpy arrays, a ``(x, y)`` pair, an advlab
    Dataset, a ``TensorDataset``, any map-style Dataset returning ``(x, y)`` or a DataLoader."""
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    pair = in_memory(data, y)  # tensors, numpy arrays, (x, y), advlab or TensorDataset
    if pair is not None:
        return pair
    if isinstance(data, TorchDataset) and hasattr(data, "__len__"):
        data = DataLoader(data, batch_size=256)
    if isinstance(data, (Iterable, DataLoader)):
        batches = [(batch[0], batch[1]) for batch in data]
        if not batches:
            raise ValueError("evaluate got empty data")
        xs, ys = zip(*batches)
        return torch.cat(xs), as_labels(torch.cat([torch.as_tensor(v) for v in ys]))
    raise TypeError(f"data must be (x, y) tensors, a Dataset or a DataLoader, got {type(data).__name__}")


def _model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _clean_pass(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, list[Flag]]:
    """Clean logits and the flags visible from them (probabilities)."""
    with model_guard(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        logits = predict(model, x, batch_size)
        check_logits(logits, y)
    flags = [Flag("probabilities", "rows of the output sum to 1")] if looks_like_probabilities(logits) else []
    return logits, flags


def _large_eps_flag(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                    generator: torch.Generator) -> list[Flag]:
    """At an eps that reaches every input in the box, PGD should break almost every point."""
    from advlab.attacks.pgd import pgd

    if len(x) == 0:
        return []
    low, high = threat.bounds
    dim = x[0].numel()
    big = {"linf": high - low, "l2": (high - low) * dim ** 0.5, "l1": (high - low) * dim}[threat.norm]
    big_threat = ThreatModel(threat.norm, big, threat.bounds)
    x_adv = pgd(model, x, y, big_threat, steps=20, step_size=big / 10, random_start=True,
                loss="cw", early_stop=True, generator=generator)  # a fooled point stays fooled
    with model_guard(model):
        survived = (predict(model, x_adv).argmax(dim=1) == y).float().mean().item()
    if survived > 0.1:
        return [Flag("large_eps_not_broken", f"{survived:.0%} of {len(x)} points survive {threat.norm} eps={big:.3g}")]
    return []


def _sanity_before(model: nn.Module, x: Tensor, y: Tensor, correct: Tensor) -> tuple[list[Flag], bool]:
    """Gradient checks on up to 128 correctly classified points: flags and whether the
    gradients look masked."""
    index = correct.nonzero().squeeze(1)[:128]
    return gradient_flags(model, x[index], y[index])


def _randomness(model: nn.Module, x: Tensor, draws: int, eot_samples: int) -> tuple[bool, list[Flag]]:
    """Whether the model is randomised (two passes on 16 points differ), and its flag."""
    check_int("draws", draws)
    check_int("eot_samples", eot_samples)
    if not is_randomized(model, x[:16]):
        return False, []
    return True, [Flag("randomized", f"predictions decided by a majority vote over {draws} "
                       f"draws; gradients averaged over {eot_samples} passes (EOT)")]


def _kernels(options: dict[str, Any], micro_batch: int | str, device: torch.device,
             model: nn.Module) -> Kernels:
    """The attacks' kernels: ``options`` plus the micro-batch; ``"auto"`` (micro-batch,
    channels_last): the default for the device and ``model``."""
    options = dict(options)
    if options.get("channels_last") == "auto":
        options["channels_last"] = default_channels_last(model, device)
    if not isinstance(options.get("channels_last", False), bool):
        raise ValueError(f"channels_last must be 'auto', True or False, got {options['channels_last']!r}")
    if micro_batch == "auto":
        micro_batch = default_micro_batch(device) or 0
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int):
        raise ValueError(f"micro_batch must be 'auto' or an int >= 0 (0: one pass), got {micro_batch!r}")
    return Kernels(**options, micro_batch=micro_batch)


def evaluate(model: nn.Module, data: Any, y: Any = None, threat: ThreatModel | None = None, *,
             attacks: str | list[AttackStep] = "standard", eps: Sequence[float] | None = None,
             batch_size: int = 500, device: str | torch.device | None = None, seed: int = 0,
             n: int | None = None, sanity: bool = True, eot_samples: int = 20, draws: int = 11,
             bpda: bool | None = None, surrogate: nn.Module | None = None,
             progress: Progress | None = None, store: Any = None,
             run_name: str | None = None, batches: bool | None = None, resume: bool = False,
             checkpoint: str | Path | None = None, channels_last: bool | str = "auto",
             compile: bool | str = False, amp: str | None = None, micro_batch: int | str = "auto",
             ) -> EvaluationResult | list[EvaluationResult]:
    """Robust accuracy of ``model`` under ``threat``: the per-sample worst case over an ensemble.

    Call as ``evaluate(model, x, y, threat)`` or ``evaluate(model, (x, y) | dataset | loader,
    threat)``. ``x``: ``(N, ...)`` in the threat's bounds; ``y``: ``(N,)`` int64.

    Args:
        attacks: a preset (``"fast"``, ``"standard"`` (default, at least AutoAttack-standard
            strength), ``"thorough"``) or a list of :class:`AttackStep`.
        eps: several radii at once (a robustness curve); returns one result per eps, ascending.
            Adversarial examples are pooled across eps (an example at distance d counts for every
            eps >= d), so larger eps only attack points that smaller ones left robust.
        n: evaluate the first ``n`` points only.
        device: where to run (default: the model's device; ``"auto"`` picks CUDA when present,
            moving the model there).
        sanity: run the gradient-masking checks and the indicators of attack failure (flags in
            ``result.warnings``, summed up by ``result.verdict``).
        draws: on a randomised model (detected automatically), every prediction -- clean and
            adversarial -- is the majority vote over this many seeded forward passes
            (:class:`advlab.evaluation.draws.Judge`); ``eot_samples``: passes the gradient attacks
            average over (EOT; AutoAttack-rand's 20).
        bpda: re-run the gradient attacks with straight-through backward passes (BPDA, Athalye et
            al. 2018): ``None`` (default) when the sanity checks find shattered gradients, True
            always, False never.
        surrogate: a differentiable stand-in returning logits ``(N, K)`` (a smooth model, or
            ``nn.Sequential(approximate_preprocessing, classifier)``): the gradient attacks are
            re-run with its backward pass, and a transfer step crafts examples on it alone; every
            candidate is verified on ``model``.
        store: an :class:`advlab.store.Store` (or a path to one) to record the result in.
        batches: evaluate batch by batch (:mod:`advlab.evaluation.sharding`): each global batch
            of ``batch_size`` points with its own seed, sharded over the ranks of an initialised
            process group, results gathered, store rows written once (rank 0), ``x_adv`` not
            kept. Default (None): on inside a process group, with ``checkpoint`` and for a
            DataLoader or Dataset (streamed with bounded memory).
        checkpoint / resume: a sidecar file committing every finished batch; ``resume=True``
            continues it after a kill and refuses other model, data, threat or preset.
        channels_last / compile / amp: kernels for the attacks only (``amp``: "bf16" or
            "fp16"); the clean pass and the verification of every example stay float32 eager.
            ``channels_last="auto"`` (default): on CPU for models with an ``nn.MaxPool2d``,
            where it is faster (:func:`advlab.evaluation.kernels.default_channels_last`);
            ``compile`` and ``amp`` are opt-in.
        micro_batch: the attacks' forward and backward passes in chunks of at most this many
            points; ``"auto"`` (default): 64 on CPU, where it is faster (cache-sized
            activations), one pass on CUDA; 0: one pass everywhere. Examples are verified on
            the unchunked model.
    """
    if isinstance(y, ThreatModel):
        y, threat = None, y
    if threat is None:
        raise ValueError("evaluate needs a ThreatModel, e.g. ThreatModel(norm='linf', eps=0.1)")
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise TypeError(f"surrogate must be an nn.Module returning logits, got {type(surrogate).__name__}")
    options = dict(channels_last=channels_last, compile=compile, amp=amp)
    if use_batches(batches, data, checkpoint=checkpoint, resume=resume):
        target = _model_device(model) if device is None else resolve_device(device)
        model = model.to(target) if device is not None else model
        kernels = _kernels(options, micro_batch, target, model)
        results = evaluate_sharded(
            model, data, y, threat, attacks=attacks, eps=eps, batch_size=batch_size, device=target,
            seed=seed, n=n, sanity=sanity, eot_samples=eot_samples, progress=progress,
            kernels=kernels, checkpoint=checkpoint, resume=resume,
            prepare=functools.partial(_prepare_batchwise, sanity=sanity, eot_samples=eot_samples,
                                      bpda=bpda, surrogate=surrogate),
            flags_after=_flags_after,
            write_store=lambda rs: store_results(store, run_name, rs) if store is not None else None)
        return results if eps is not None else results[0]
    x, labels = collect_data(data, y)
    if n is not None:
        x, labels = x[:n], labels[:n]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)  # inputs follow the model's dtype (a float64 model gets float64)
    check_inputs(x, labels, threat)
    target = _model_device(model) if device is None else resolve_device(device)
    model = model.to(target) if device is not None else model
    kernels = _kernels(options, micro_batch, target, model)
    surrogate = surrogate.to(target) if surrogate is not None and device is not None else surrogate
    x, labels = x.to(target), labels.to(target)
    start = time.perf_counter()
    eps_list = sorted(float(e) for e in eps) if eps is not None else [threat.eps]
    logits, flags = _clean_pass(model, x, labels, batch_size)
    randomized, more = _randomness(model, x, draws, eot_samples)
    judge = Judge(model, x, draws=draws if randomized else 1, seed=seed, batch_size=batch_size)
    correct, share = judge.clean(logits, labels)
    flags += more
    num_classes = logits.shape[1]
    ensemble = resolve_ensemble(attacks, num_classes, threat.norm)
    generator = torch.Generator(device=target).manual_seed(seed)  # the sanity checks' draws
    streams = PointStreams(seed, 0, len(x), device=target)  # the attacks' draws: one stream per point
    chance = chance_flag(correct.float().mean().item(), num_classes, len(x)) if sanity else []
    attack_model, ensemble, more, suspicious = _attack_setup(
        model, x, labels, correct, ensemble, sanity=sanity, randomized=randomized,
        eot_samples=eot_samples, bpda=bpda, surrogate=surrogate, after_checks=chance)
    flags += more
    suspicious = suspicious or any(f.code in MASKING for f in flags)
    attack_model = accelerate(attack_model, kernels, example=x[:1])
    pool = Pool.empty(x)
    outcomes = []
    for k, eps_k in enumerate(eps_list):
        threat_k = threat if isinstance(eps_k, Tensor) else threat.with_eps(eps_k)
        outcome = attack_one_eps(model, attack_model, x, labels, threat_k, ensemble, pool, correct,
                                 batch_size=batch_size, generator=streams, progress=progress,
                                 suspicious=suspicious, judge=judge)
        if sanity and k > 0:
            recheck_smaller_eps(model, attack_model, x, labels, threat_k, ensemble[0], pool,
                                eps_list[k - 1], sample=32, batch_size=batch_size,
                                generator=streams, outcome=outcome, judge=judge)
        outcomes.append((threat_k, outcome))
    if sanity:
        flags += _flags_after(model, x, labels, threat, correct, outcomes, generator=generator,
                              ensemble=ensemble, randomized=randomized, suspicious=suspicious)
    elapsed = time.perf_counter() - start
    meta = dict(preset=attacks if isinstance(attacks, str) else "custom", time_s=elapsed, seed=seed,
                n=len(x), model_id=fingerprint_model(model), data_id=fingerprint_data(x, labels),
                version=advlab.__version__, bounds=threat.bounds,
                extras={"engine": "in-memory", "kernels": kernels.describe()})
    results = [_result(x, correct, pool, t, o, flags, {**meta, "extras": dict(meta["extras"])})
               for t, o in outcomes]  # one extras dict per result (the store adds its row id)
    if randomized:
        _expected(results, judge, x, labels, share)
    for r in results:
        logger.info("%s", r.summary())
    if store is not None:
        store_results(store, run_name, results)
    return results if eps is not None else results[0]


def _attack_setup(model: nn.Module, x: Tensor, labels: Tensor, correct: Tensor,
                  ensemble: list[AttackStep], *, sanity: bool, randomized: bool, eot_samples: int,
                  bpda: bool | None, surrogate: nn.Module | None,
                  after_checks: list[Flag] | None = None
                  ) -> tuple[nn.Module, list[AttackStep], list[Flag], bool]:
    """The gradient checks and the adaptive steps (EOT, BPDA, surrogate): the model to attack,
    the ensemble, the flags (``after_checks`` between the two) and whether the gradients stay
    suspicious (masked and not handled by straight-through passes)."""
    flags, masked = _sanity_before(model, x, labels, correct) if sanity else ([], False)
    flags += after_checks or []
    index = correct.nonzero().squeeze(1)[:128]
    attack_model, ensemble, more, handled = adapt(model, ensemble, randomized=randomized,
                                                  eot_samples=eot_samples, masked=masked, bpda=bpda,
                                                  surrogate=surrogate, x=x[index], y=labels[index])
    flags += more
    suspicious = (masked and not handled) or any(f.code in MASKING for f in flags)
    return attack_model, ensemble, flags, suspicious


def _prepare_batchwise(model: nn.Module, x: Tensor, labels: Tensor, correct: Tensor,
                       ensemble: list[AttackStep], *, sanity: bool, eot_samples: int,
                       bpda: bool | None, surrogate: nn.Module | None
                       ) -> tuple[nn.Module, list[AttackStep], list[Flag], bool]:
    """The batch-wise engine's set-up on global batch 0, as the in-memory path's
    (:func:`_attack_setup`); randomised models are refused there."""
    if is_randomized(model, x[:16]):
        raise NotImplementedError(
            "the batch-wise evaluation (process groups, checkpoint/resume, streaming) does not "
            "support randomised models yet (their majority vote over draws needs every point in "
            "one process): call evaluate(..., batches=False) without checkpoint or resume")
    return _attack_setup(model, x, labels, correct, ensemble, sanity=sanity, randomized=False,
                         eot_samples=eot_samples, bpda=bpda, surrogate=surrogate)


def _expected(results: list[EvaluationResult], judge: Judge, x: Tensor, y: Tensor,
              clean_share: Tensor) -> None:
    """Expected accuracy over draws (clean, and at the returned examples) with 95 % intervals."""
    clean = mean_interval(clean_share)
    for r in results:
        x_adv = r.x_adv if r.x_adv is not None else x
        robust_share = judge.share(x_adv, y) * r.clean_correct.to(x.device)
        r.draws = judge.draws
        r.expected_accuracy = {"clean": list(clean), "robust": list(mean_interval(robust_share))}


def _flags_after(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, correct: Tensor,
                 outcomes: list, *, generator: torch.Generator, ensemble: list[AttackStep],
                 randomized: bool, suspicious: bool) -> list[Flag]:
    flags: list[Flag] = []
    n_correct = max(int(correct.sum()), 1)
    outcomes = [o for _, o in outcomes]
    blackbox = sum(o.blackbox_breaks for o in outcomes)
    if blackbox >= max(2, 0.005 * n_correct):
        flags.append(Flag("blackbox_stronger", f"the black-box attack broke {blackbox} points the white-box attacks missed"))
    failed = sum(o.recheck_failed for o in outcomes)
    total = sum(o.recheck_total for o in outcomes)
    if total and failed >= 2 and failed / total > 0.25:
        flags.append(Flag("not_monotone", f"{failed}/{total} points broken at a smaller eps survived the first attack at a larger eps"))
    claimed = sum(s.claimed for o in outcomes for s in o.per_attack.values())
    resisted = sum(s.transfer_failed for o in outcomes for s in o.per_attack.values())
    if resisted >= 2 and resisted > 0.1 * claimed:
        flags.append(Flag("transfer_failure", f"{resisted} of {claimed} examples that fooled a "
                          "stand-in (surrogate) did not fool the model"))
    index = correct.nonzero().squeeze(1)[:32]
    flags += _large_eps_flag(model, x[index], y[index], threat, generator=generator)
    if not randomized:  # a vote over draws is not a single forward pass to monitor
        last = outcomes[-1].eps if outcomes else threat.eps
        first = ensemble[0]
        run = first.escalate if suspicious and first.escalate is not None else first.run
        flags += indicator_flags(model, first.name, run, x[index], y[index], threat.with_eps(last),
                                 generator=generator)
    return flags


def _result(x: Tensor, correct: Tensor, pool: Pool, threat: ThreatModel, outcome: Any,
            flags: list[Flag], meta: dict[str, Any]) -> EvaluationResult:
    """The record of one eps from the pooled adversarial examples."""
    broken = pool.broken(threat.eps_per_sample(x)) & correct
    robust = correct & ~broken
    mask = per_sample_view(broken, x)
    distance = torch.where(correct, pool.distance, torch.zeros_like(pool.distance))
    broken_by = [("clean" if not c else (a if b else None))
                 for c, a, b in zip(correct.tolist(), pool.attack, broken.tolist())]
    per_attack = {name: {"ran_on": s.ran_on, "breaks": s.breaks, "time_s": s.time_s}
                  for name, s in outcome.per_attack.items()}
    return EvaluationResult(
        norm=threat.norm, eps=outcome.eps, clean_accuracy=correct.float().mean().item(),
        robust_accuracy=robust.float().mean().item(), clean_correct=correct.cpu(),
        robust_correct=robust.cpu(), broken_by=broken_by, distance=distance.cpu(),
        per_attack=per_attack, warnings=[f.to_dict() for f in flags],
        x_adv=torch.where(mask, pool.x_adv, x), **meta)


def store_results(store: Any, run_name: str | None, results: list[EvaluationResult]) -> None:
    """Record ``results`` in ``store`` (an :class:`advlab.store.Store` or a path), one row per
    eps; each result's ``extras["store_id"]`` gets its row id."""
    from advlab.store import Store

    owned = not isinstance(store, Store)
    db = Store(store) if owned else store
    try:
        for r in results:
            params = {"norm": r.norm, "eps": r.eps, "preset": r.preset, "n": r.n, "seed": r.seed}
            r.extras["store_id"] = db.add_evaluation(run_name, "evaluate", params, r.to_dict())
    finally:
        if owned:
            db.close()
