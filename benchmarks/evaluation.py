"""Evaluation benchmark: ``advlab.evaluate(..., attacks="standard")`` against AutoAttack.

AutoAttack standard (Croce & Hein 2020: APGD-CE, APGD-T, FAB-T, Square 5000) as shipped in
torchattacks, and the reference implementation when it is importable (``autoattack`` from the
authors' repository, or its PyPI packaging ``pyautoattack``), run on the same points of the same
models as advlab's ``standard`` preset:

* ``standard``     small_cnn trained with cross-entropy;
* ``adversarial``  small_cnn trained with fast FGSM with random start (Wong et al. 2020);
* ``quantized``    the standard model behind input quantisation to 16 levels: its input
                   gradient is exactly zero (shattered gradients, Athalye et al. 2018);
* ``saturated``    the adversarial model with logits x 1000: the softmax saturates, so the
                   cross-entropy gradient vanishes on correctly classified points;
* ``sign``         (optional) the standard model behind ``sign(x - 0.5)``: a ``sign`` inside,
                   zero input gradients. Under Linf its exact robust accuracy is computed too,
                   by enumerating every binarised image the eps-ball can reach;
* ``noisy``        (optional) the standard model with Gaussian input noise (sigma 0.1): a
                   randomised model. advlab detects it and switches to EOT; both AutoAttacks run
                   their ``rand`` version (APGD-CE and APGD-DLR, EOT over 20 draws). Its
                   predictions are counted by majority vote over 25 passes, for every library
                   alike.

With ``--norm l1`` only the reference runs (torchattacks has no L1 AutoAttack): its L1 version
(APGD-CE with 5 restarts and APGD-T over 5 targets, both with the larger-radii schedule, FAB-T
over 9 targets, Square-L1 with 5000 queries) against advlab's L1 ``standard``.

The table gives, per model and AutoAttack, n, both robust accuracies with 95 % Clopper-Pearson
intervals, the points only AutoAttack broke / only advlab broke, and the paired difference with
its exact 95 % interval (Clopper-Pearson on the discordant points, McNemar's exact test): a
difference is only called measured when that interval excludes 0.

Per model the two evaluations run back to back (the order alternates from model to model), each
timed once with ``time.perf_counter``. Robust accuracy is recounted here for every library from
its returned examples: a point counts as broken only if its example lies inside the eps-ball and
the box and is misclassified by a fresh forward pass. Points that one side broke and the other
did not are listed with the attack that broke them.

    benchmarks/.venv-peers/bin/python benchmarks/evaluation.py --quick      # digits, 100 points
    benchmarks/.venv-peers/bin/python benchmarks/evaluation.py --threads 2 --json evaluation.json

Trained models are cached under ``--cache-dir`` (default ``runs/benchmarks/evaluation``). Never
part of the test suite; timings only mean something on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import advlab
from advlab import ThreatModel
from advlab.attacks import model_guard
from advlab.data import load_dataset
from advlab.models import create_model, load_model
from advlab.stats import clopper_pearson_interval
from advlab.training import fit, get_objective

LOG = logging.getLogger("benchmarks.evaluation")
MODELS = ("standard", "adversarial", "quantized", "saturated", "noisy", "sign")
DEFAULT_MODELS = "standard,adversarial,quantized,saturated"
TARGET_PP, TARGET_RATIO = 0.3, 0.5  # the targets
AA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


# --------------------------------------------------------------------------- gradient masking
class Quantize(nn.Module):
    """Rounds the input to ``levels`` grey levels before ``model``: zero input gradients."""

    def __init__(self, model: nn.Module, levels: int = 16) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: Tensor) -> Tensor:  # x (B, C, H, W) in [0, 1]
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


class Binarize(nn.Module):
    """Binarises the input with ``sign`` before ``model``: a ``sign`` inside, zero gradients."""

    def __init__(self, model: nn.Module, threshold: float = 0.5) -> None:
        super().__init__()
        self.model, self.threshold = model, threshold

    def forward(self, x: Tensor) -> Tensor:  # x (B, C, H, W) in [0, 1]
        return self.model((torch.sign(x - self.threshold) + 1) / 2)


def exact_binarized_robust(model: Binarize, x: Tensor, y: Tensor, eps: float, skip: Tensor,
                           limit: int = 2 ** 26, chunk: int = 16384) -> tuple[Tensor, Tensor]:
    """The exact Linf robustness of a :class:`Binarize` model: ``(robust, unknown)``, ``(N,)`` each.

    Behind ``sign(x - t)`` only the binarised image matters, and under Linf every pixel moves on
    its own: the inputs the model can see are the product over pixels of the sign values reachable
    in ``[x - eps, x + eps]`` cut to [0, 1] (``0`` and ``1``, and ``0.5`` where ``x' = t`` is
    reachable). Enumerating that product gives the true robustness, the floor no attack can go
    below. Points in ``skip`` (already broken by a verified example) and points whose reachable
    images hold more than ``limit`` pixels in all (10 ** 6 images of 8x8 digits, 85 000 of
    Fashion-MNIST) are not enumerated; the latter come back in ``unknown``.
    """
    t = model.threshold
    robust = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    unknown = torch.zeros_like(robust)
    with model_guard(model), torch.no_grad():
        for i in (~skip).nonzero().squeeze(1).tolist():
            lo, hi = (x[i] - eps).clamp(0.0, 1.0).flatten(), (x[i] + eps).clamp(0.0, 1.0).flatten()
            options = [[v for v, ok in ((0.0, a < t), (0.5, a <= t <= b), (1.0, b > t)) if ok]
                       for a, b in zip(lo.tolist(), hi.tolist())]
            free = [j for j, o in enumerate(options) if len(o) > 1]
            if math.prod(len(options[j]) for j in free) * x[i].numel() > limit:
                unknown[i] = True
                continue
            base = torch.tensor([o[0] for o in options], device=x.device)
            grids = (torch.cartesian_prod(*[torch.tensor(options[j], device=x.device) for j in free]
                                          ).reshape(-1, len(free))
                     if free else torch.zeros(1, 0, device=x.device))
            robust[i] = True
            for start in range(0, len(grids), chunk):
                images = base.repeat(len(grids[start:start + chunk]), 1)
                images[:, free] = grids[start:start + chunk]
                if (model.model(images.reshape(-1, *x.shape[1:])).argmax(dim=1) != y[i]).any():
                    robust[i] = False
                    break
    return robust, unknown


class Saturate(nn.Module):
    """Multiplies the logits by ``scale``: the softmax saturates and the CE gradient vanishes."""

    def __init__(self, model: nn.Module, scale: float = 1e3) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale  # (B, K)


class GaussianNoise(nn.Module):
    """Adds fresh Gaussian noise (``sigma``) to every input, then clips to [0, 1]: randomised."""

    randomized = True  # the benchmark counts its predictions by majority vote (:func:`vote`)

    def __init__(self, model: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0.0, 1.0))


# ------------------------------------------------------------------------------- base models
def train_or_load(kind: str, args: argparse.Namespace) -> nn.Module:
    """small_cnn trained with ``none`` or ``fgsm-rs`` at ``--eps``; cached under ``--cache-dir``."""
    given = args.standard_model if kind == "standard" else args.adversarial_model
    train_eps = args.train_eps if args.train_eps is not None else (args.eps if args.norm == "linf" else 0.1)
    run_dir = Path(given or Path(args.cache_dir) / f"{args.dataset}-{kind}-eps{train_eps:g}")
    if (run_dir / "model.safetensors").exists():
        return load_model(run_dir, device=args.device).eval()
    if given:
        raise SystemExit(f"{given}: no model.safetensors there")
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    info = train.info
    scale = 10 if args.dataset == "digits" else 1  # digits: 1397 images, 10x the epochs
    epochs, objective = ((3 * scale, get_objective("none")) if kind == "standard" else
                         (5 * scale, get_objective("fgsm-rs", eps=train_eps, eps_ramp=0.2)))
    LOG.info("training the %s model: %d epochs on %d %s images -> %s", kind, epochs, len(train.x),
             args.dataset, run_dir)
    model = create_model("small_cnn", info.num_classes, info.input_shape,
                         normalize=(info.mean, info.std), seed=0)
    result = fit(model, train, objective=objective, epochs=epochs, lr=2e-3, seed=0,
                 device=args.device, run_dir=run_dir, progress=False)
    return result.model.eval()


def build_models(names: list[str], args: argparse.Namespace) -> dict[str, tuple[nn.Module, str]]:
    """name -> (model, description) for the requested models (base models trained once)."""
    bases: dict[str, nn.Module] = {}

    def base(kind: str) -> nn.Module:
        if kind not in bases:
            bases[kind] = train_or_load(kind, args)
        return bases[kind]

    recipes: dict[str, Callable[[], tuple[nn.Module, str]]] = {
        "standard": lambda: (base("standard"), args.standard_model or "small_cnn, cross-entropy"),
        "adversarial": lambda: (base("adversarial"), args.adversarial_model or "small_cnn, fgsm-rs (linf)"),
        "quantized": lambda: (Quantize(base("standard"), args.levels),
                              f"standard, input rounded to {args.levels} levels"),
        "sign": lambda: (Binarize(base("standard")), "standard, input binarised by sign(x - 0.5)"),
        "saturated": lambda: (Saturate(base("adversarial")), "adversarial, logits x 1000"),
        "noisy": lambda: (GaussianNoise(base("standard"), args.sigma),
                          f"standard, input noise sigma {args.sigma:g}"),
    }
    return {name: recipes[name]() for name in names}


# ---------------------------------------------------------------------------------- attacks
@dataclass
class Outcome:
    """One library's evaluation of one model."""

    robust: Tensor  # (N,) bool: clean-correct and not broken by a verified example
    time_s: float
    broken_by: list[str | None]  # (N,) attack that broke the point ("clean" if misclassified)
    per_attack: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    invalid: int = 0  # examples outside the ball / box (not counted as breaks)
    expected: dict[str, list[float]] = field(default_factory=dict)  # advlab, randomised models
    verdict: str = ""
    reused: str = ""  # when an AutoAttack outcome comes from --reuse-aa: the date it was measured


class Recorder:
    """Wraps the attack methods of an AutoAttack object: time, inputs and outputs of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Tensor, Tensor, float]] = []  # (name, x_in, x_adv, seconds)

    def wrap(self, owner: Any, method: str, name: Callable[[], str]) -> None:
        inner = getattr(owner, method)

        def recorded(x_in: Tensor, *rest: Any, **options: Any) -> Tensor:
            start = time.perf_counter()
            x_adv = inner(x_in, *rest, **options)
            self.calls.append((name(), x_in.detach(), x_adv.detach(), time.perf_counter() - start))
            return x_adv

        setattr(owner, method, recorded)


def attribute(model: nn.Module, x: Tensor, y: Tensor, recorder: Recorder, clean: Tensor
              ) -> tuple[list[str | None], dict[str, dict[str, float]]]:
    """Which recorded attack broke which point (the first whose example is misclassified by a
    fresh forward pass, or a majority of passes for a randomised model). The points of each
    call are found by their pixels. Only clean-correct points count in the statistics
    (torchattacks also passes the others to its first attack)."""
    rows: dict[bytes, list[int]] = {}
    for j, row in enumerate(x.detach().cpu().numpy()):
        rows.setdefault(row.tobytes(), []).append(j)
    broken_by: list[str | None] = [None] * len(x)
    per_attack: dict[str, dict[str, float]] = {}
    for name, x_in, x_adv, seconds in recorder.calls:
        seen: dict[bytes, int] = {}
        index_list = []
        for row in x_in.cpu().numpy():
            key = row.tobytes()
            index_list.append(rows[key][seen.get(key, 0)])
            seen[key] = seen.get(key, 0) + 1
        index = torch.tensor(index_list, dtype=torch.long, device=x.device)
        wrong = (vote(model, x_adv) != y[index]) & clean[index]
        for i in index[wrong].tolist():
            broken_by[i] = broken_by[i] or name
        stats = per_attack.setdefault(name, {"ran_on": 0, "breaks": 0, "time_s": 0.0})
        stats["ran_on"] += int(clean[index].sum())
        stats["breaks"] += int(wrong.sum())
        stats["time_s"] += seconds
    return broken_by, per_attack


VOTES = 25  # forward passes per point when the model is randomised (majority vote)


def vote(model: nn.Module, x: Tensor) -> Tensor:
    """``(N,)`` predicted labels; for a randomised model the majority over :data:`VOTES` passes."""
    with model_guard(model), torch.no_grad():
        first = model(x).argmax(dim=1)
        if not getattr(model, "randomized", False):
            return first
        passes = torch.stack([first] + [model(x).argmax(dim=1) for _ in range(VOTES - 1)])
    return passes.mode(dim=0).values


def recount(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, threat: ThreatModel,
            clean: Tensor) -> tuple[Tensor, int]:
    """``(N,)`` robust mask from returned examples (inside the threat model + misclassified)."""
    inside = threat.contains(x, x_adv, atol=1e-5)
    wrong = vote(model, x_adv) != y
    return clean & ~(inside & wrong), int((~inside).sum())


def aa_version(model: nn.Module) -> str:
    """AutoAttack's own protocol for the model: ``rand`` (APGD-CE and APGD-DLR with EOT over 20
    draws, Croce & Hein 2020) for a randomised model, ``standard`` otherwise."""
    return "rand" if getattr(model, "randomized", False) else "standard"


def run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, clean: Tensor,
                     num_classes: int) -> Outcome:
    import torchattacks

    version = aa_version(model)
    attack = torchattacks.AutoAttack(model, norm=AA_NORMS[threat.norm], eps=threat.eps, version=version,
                                     n_classes=num_classes, seed=0)
    recorder = Recorder()
    names = ("apgd-ce", "apgd-dlr") if version == "rand" else ("apgd-ce", "apgd-t", "fab-t", "square")
    for sub, name in zip(attack._autoattack.attacks, names):
        recorder.wrap(sub, "forward", lambda n=name: n)
    start = time.perf_counter()
    x_adv = attack(x, y)
    seconds = time.perf_counter() - start
    robust, invalid = recount(model, x, y, x_adv, threat, clean)
    broken_by, per_attack = attribute(model, x, y, recorder, clean)
    return Outcome(robust, seconds, _label(broken_by, clean, robust), per_attack, invalid=invalid)


class FlagCollector(logging.Handler):
    """Collects the warnings of a library's logger (and keeps them off the console)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger, self.messages = logging.getLogger(name), []
        self.was_propagating, self.logger.propagate = self.logger.propagate, False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().split(". ")[0])

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self.was_propagating
        super().close()


def reference_module() -> Any | None:
    for name in ("autoattack", "pyautoattack"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def run_reference(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, clean: Tensor) -> Outcome:
    module = reference_module()
    attack = module.AutoAttack(model, norm=AA_NORMS[threat.norm], eps=threat.eps, version=aa_version(model),
                               seed=0, device=str(x.device))
    attack.verbose = False
    flags = FlagCollector("auto-attack")  # the reference's own checks (flags_doc.md)
    recorder = Recorder()
    recorder.wrap(attack.apgd, "perturb", lambda: f"apgd-{attack.apgd.loss}")
    recorder.wrap(attack.apgd_targeted, "perturb", lambda: "apgd-t")
    recorder.wrap(attack.fab, "perturb", lambda: "fab-t")
    recorder.wrap(attack.square, "perturb", lambda: "square")
    batch = "bs" if "bs" in inspect.signature(attack.run_standard_evaluation).parameters else "batch_size"
    start = time.perf_counter()
    out = attack.run_standard_evaluation(x, y, **{batch: len(x)})  # one batch: one call per attack
    seconds = time.perf_counter() - start
    flags.close()
    x_adv = out[0] if isinstance(out, tuple) else out
    robust, invalid = recount(model, x, y, x_adv, threat, clean)
    broken_by, per_attack = attribute(model, x, y, recorder, clean)
    return Outcome(robust, seconds, _label(broken_by, clean, robust), per_attack,
                   sorted(set(flags.messages)), invalid)


def run_advlab(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, clean: Tensor,
               preset: str, channels_last: bool | str = "auto") -> Outcome:
    start = time.perf_counter()
    result: Any = advlab.evaluate(model, x, y, threat, attacks=preset, seed=0, channels_last=channels_last)
    seconds = time.perf_counter() - start
    robust, invalid = recount(model, x, y, result.x_adv, threat, clean)
    if not getattr(model, "randomized", False) and not torch.equal(
            robust, result.robust_correct.to(robust.device)):
        LOG.warning("advlab: recounted robust points differ from result.robust_correct (%d vs %d)",
                    int(robust.sum()), int(result.robust_correct.sum()))
    flags = [w["code"] for w in result.warnings]
    return Outcome(robust, seconds, _label(result.broken_by, clean, robust), result.per_attack,
                   flags, invalid, result.expected_accuracy, result.verdict)


def cache_path(cache: str, lib: str, name: str, description: str, model: nn.Module, x: Tensor, y: Tensor,
               threat: ThreatModel) -> Path:
    """Where an AutoAttack outcome is kept: keyed by the model (weights and wrapper), the points
    and the threat."""
    import hashlib

    from advlab.evaluation import fingerprint_data, fingerprint_model

    wrapper = hashlib.sha256(description.encode()).hexdigest()[:8]
    key = f"{fingerprint_model(model)}-{wrapper}-{fingerprint_data(x, y)}"
    return Path(cache) / f"{lib}-{name}-{threat.norm}-{threat.eps:g}-n{len(x)}-{key}.json"


def save_outcome(path: Path, out: Outcome) -> None:
    body = {"robust": out.robust.tolist(), "time_s": out.time_s, "broken_by": out.broken_by,
            "per_attack": out.per_attack, "flags": out.flags, "invalid": out.invalid,
            "measured": time.strftime("%Y-%m-%d %H:%M")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)


def load_outcome(path: Path, device: torch.device | str) -> Outcome:
    body = json.loads(path.read_text())
    LOG.info("reusing %s (timed %s)", path.name, body["measured"])
    return Outcome(torch.tensor(body["robust"], device=device), body["time_s"], body["broken_by"],
                   body["per_attack"], body["flags"], body["invalid"], reused=body["measured"])


def run_library(lib: str, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
                clean: Tensor, num_classes: int, preset: str, cache: Path | None = None) -> Outcome:
    """One library's outcome; an AutoAttack outcome is read from / written to ``cache``."""
    if lib == "advlab-nchw":  # the default kernels but channels_last off (the default before 0.2)
        return run_advlab(model, x, y, threat, clean, preset, channels_last=False)
    if lib != "advlab" and cache is not None:
        if cache.exists():
            return load_outcome(cache, x.device)
        out = run_library(lib, model, x, y, threat, clean, num_classes, preset)
        save_outcome(cache, out)
        return out
    if lib == "torchattacks":
        return run_torchattacks(model, x, y, threat, clean, num_classes)
    if lib == "reference":
        return run_reference(model, x, y, threat, clean)
    return run_advlab(model, x, y, threat, clean, preset)


def _label(broken_by: list[str | None], clean: Tensor, robust: Tensor) -> list[str | None]:
    return [("clean" if not c else None if r else b or "?")
            for b, c, r in zip(broken_by, clean.tolist(), robust.tolist())]


# ---------------------------------------------------------------------------------- report
def pct(mask: Tensor) -> float:
    return 100.0 * mask.float().mean().item()


def describe(name: str, clean: Tensor, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """The row of one model, printed per-attack breaks and the points that differ."""
    ours = outcomes["advlab"]
    row: dict[str, Any] = {"model": name, "n": len(clean), "clean": pct(clean), "advlab": pct(ours.robust),
                           "advlab_s": ours.time_s, "flags": ours.flags, "libs": {}}
    print(f"\n== {name}: clean {pct(clean):.1f}%")
    for lib, out in outcomes.items():
        breaks = ", ".join(f"{k} {int(v['breaks'])}/{int(v['ran_on'])} ({v['time_s']:.1f}s)"
                           for k, v in out.per_attack.items())
        extra = f"  [{out.invalid} examples outside the ball/box]" if out.invalid else ""
        extra += f"  [reused: measured {out.reused}]" if out.reused else ""
        print(f"  {lib:<13} robust {pct(out.robust):5.1f}%  {out.time_s:7.1f}s  {breaks}{extra}")
        for flag in out.flags:
            print(f"    flag: {flag}")
        if out.expected:
            mean, low, high = out.expected["robust"]
            c_mean, c_low, c_high = out.expected["clean"]
            print(f"    expected accuracy over draws: clean {100 * c_mean:.1f}% [{100 * c_low:.1f}, "
                  f"{100 * c_high:.1f}], robust {100 * mean:.1f}% [{100 * low:.1f}, {100 * high:.1f}]")
        if out.verdict:
            print(f"    verdict: {out.verdict}")
        if lib == "advlab":
            continue
        they = (~out.robust & ours.robust).nonzero().squeeze(1).tolist()  # they broke, we did not
        we = (out.robust & ~ours.robust).nonzero().squeeze(1).tolist()
        if they:
            print(f"    broken by {lib} only: " + ", ".join(f"#{i} ({out.broken_by[i]})" for i in they))
        if we:
            print("    broken by advlab only: " + ", ".join(f"#{i} ({ours.broken_by[i]})" for i in we))
        row["libs"][lib] = {"robust": pct(out.robust), "time_s": out.time_s, "only_they": they,
                            "only_advlab": we, "per_attack": out.per_attack, "invalid": out.invalid,
                            "flags": out.flags, "reused": out.reused}
    row["advlab_per_attack"] = ours.per_attack
    return row


def interval(pct_value: float, n: int) -> str:
    """``"61.0 % [54.0, 67.6]"``: a robust accuracy with its 95 % Clopper-Pearson interval."""
    k = round(pct_value * n / 100)
    low, high = clopper_pearson_interval(k, n)
    return f"{pct_value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def paired_difference(only_they: int, only_we: int, n: int) -> tuple[float, float, float]:
    """advlab minus AutoAttack robust accuracy in pp, with a 95 % interval from the discordant
    points (exact, conditional on their number ``b + c``: Clopper-Pearson on ``b`` of ``b + c``,
    the interval of McNemar's exact test)."""
    b, c = only_they, only_we  # b: AA broke, advlab robust (advlab higher); c: the reverse
    m = b + c
    diff = 100.0 * (b - c) / n
    if m == 0:
        return diff, 0.0, 0.0
    low, high = clopper_pearson_interval(b, m)
    return diff, 100.0 * m * (2 * low - 1) / n, 100.0 * m * (2 * high - 1) / n


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("| model | AutoAttack | n | clean | AA robust [95 % CI] | advlab robust [95 % CI] | "
              "only AA broke / only advlab broke | diff (pp) [95 % CI] | AA time | advlab time | "
              "time ratio | targets (<= +0.3 pp, <= 0.5x) | advlab flags |")
    print("\n" + header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        n = row["n"]
        for lib, r in row["libs"].items():
            b, c = len(r["only_they"]), len(r["only_advlab"])
            diff, low, high = paired_difference(b, c, n)
            ratio = row["advlab_s"] / max(r["time_s"], 1e-9)
            measured = "measured" if low > 0 or high < 0 else "no measured difference"
            verdict = ("robust ok" if diff <= TARGET_PP else "robust FAIL") + ", " + (
                f"time not paired ({lib} reused from {r['reused']})" if r.get("reused") else
                "time ok" if ratio <= TARGET_RATIO else "time FAIL")
            if lib == "advlab-nchw":  # not an AutoAttack: the same evaluation, channels_last off
                verdict = f"default kernels vs channels_last off: {ratio:.2f}x the time"
            elif lib == "torchattacks" and "advlab-nchw" in row["libs"] and not r.get("reused"):
                nchw_ratio = row["libs"]["advlab-nchw"]["time_s"] / max(r["time_s"], 1e-9)
                verdict += f"; advlab with channels_last off {nchw_ratio:.2f}x torchattacks"
            print(f"| {row['model']} | {lib} | {n} | {row['clean']:.1f}% | {interval(r['robust'], n)} | "
                  f"{interval(row['advlab'], n)} | {b} / {c} | {diff:+.1f} [{low:+.1f}, {high:+.1f}] "
                  f"({measured}) | {r['time_s']:.1f} s | {row['advlab_s']:.1f} s | "
                  f"{ratio:.2f}x | {verdict} | {', '.join(row['flags']) or '-'} |")


def exact_floor(model: Binarize, x: Tensor, y: Tensor, eps: float, clean: Tensor,
                outcomes: dict[str, Outcome], row: dict[str, Any]) -> None:
    """Prints the exact robust accuracy of a binarised model (an interval where some points have
    too many reachable images) and how many points each library wrongly calls robust."""
    start = time.perf_counter()
    broken = ~clean
    for out in outcomes.values():
        broken |= ~out.robust  # verified breaks (recounted): certainly not robust
    robust, unknown = exact_binarized_robust(model, x, y, eps, skip=broken)
    low, high = pct(robust), pct(robust | unknown)
    row["exact"] = [low, high]
    print(f"  exact robust accuracy (every reachable binarised image of the {int((~broken).sum())} "
          f"points no library broke enumerated, {time.perf_counter() - start:.0f}s): "
          + (f"{low:.1f}%" if low == high else
             f"between {low:.1f}% and {high:.1f}% ({int(unknown.sum())} points too large to enumerate)"))
    for lib, out in outcomes.items():
        missed = int((out.robust & ~robust & ~unknown).sum())
        row.setdefault("above_exact", {})[lib] = missed
        print(f"    {lib:<13} calls {missed} breakable points robust")


# ------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 points of digits (pipeline check)")
    parser.add_argument("--dataset", default=None, choices=("fashion-mnist", "digits"),
                        help="default fashion-mnist (digits with --quick)")
    parser.add_argument("--n", type=int, default=None, help="test points (default 1000, quick 100)")
    parser.add_argument("--eps", type=float, default=0.1, help="radius (default 0.1)")
    parser.add_argument("--norm", default="linf", choices=("linf", "l2", "l1"),
                        help="threat norm (l1: the reference AutoAttack only; torchattacks has none)")
    parser.add_argument("--levels", type=int, default=16, help="grey levels of the quantized model")
    parser.add_argument("--sigma", type=float, default=0.1, help="input noise of the noisy model")
    parser.add_argument("--train-eps", type=float, default=None,
                        help="Linf eps of the adversarial model's training (default --eps for linf, 0.1 otherwise)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"subset of {','.join(MODELS)}")
    parser.add_argument("--aa", default="torchattacks,reference",
                        help="AutoAttack implementations (reference: skipped when not installed); "
                             "advlab-nchw adds advlab with channels_last off, paired with the "
                             "default run (its row: default kernels vs channels_last off)")
    parser.add_argument("--preset", default="standard", help="advlab.evaluate preset (default standard)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default="runs/benchmarks/evaluation")
    parser.add_argument("--standard-model", default=None, help="use this advlab run dir as the standard model")
    parser.add_argument("--adversarial-model", default=None, help="... and this one as the adversarial model")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    parser.add_argument("--reuse-aa", default=None, metavar="DIR",
                        help="keep each AutoAttack outcome in DIR and reuse it when the model, points and "
                             "threat are the same (its time is the one measured then)")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or ("digits" if args.quick else "fashion-mnist")
    args.n = args.n or (100 if args.quick else 1000)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    args.model_names = names
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    LOG.setLevel(logging.INFO)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    from advlab._utils import resolve_device

    args.device = resolve_device(args.device)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    x, y = test.x[: args.n].to(args.device), test.y[: args.n].to(args.device)
    threat = ThreatModel(args.norm, args.eps)
    libs = [lib.strip() for lib in args.aa.split(",") if lib.strip()]
    if args.norm == "l1" and "torchattacks" in libs:
        LOG.warning("torchattacks' AutoAttack has no L1 version: skipped")
        libs.remove("torchattacks")
    if "reference" in libs and reference_module() is None:
        LOG.warning("reference AutoAttack (autoattack / pyautoattack) not installed: skipped")
        libs.remove("reference")
    libs = [lib for lib in libs if lib in ("torchattacks", "reference", "advlab-nchw")] + ["advlab"]
    try:
        import torchattacks
    except ImportError:
        raise SystemExit("torchattacks is not installed: run bash benchmarks/setup_peers.sh and use "
                         "benchmarks/.venv-peers/bin/python") from None
    ref = reference_module()
    print(f"{args.dataset}: {len(x)} test points, {args.norm} eps {args.eps:g}, device {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, advlab {advlab.__version__} "
          f"(preset {args.preset}), "
          f"torchattacks {torchattacks.__version__}"
          + (f", {ref.__name__} {getattr(ref, '__version__', '?')}" if "reference" in libs else ""),
          flush=True)
    models = build_models(args.model_names, args)
    rows = []
    for k, (name, (model, description)) in enumerate(models.items()):
        model = model.to(args.device).eval()
        clean = vote(model, x) == y
        order = [lib for lib in libs if lib != "advlab"] + ["advlab"]
        order = order if k % 2 == 0 else order[::-1]  # alternate who runs first
        LOG.info("%s (%s): running %s", name, description, ", ".join(order))
        outcomes = {lib: run_library(lib, model, x, y, threat, clean, test.info.num_classes, args.preset,
                                     cache_path(args.reuse_aa, lib, name, description, model, x, y, threat)
                                     if args.reuse_aa else None)
                    for lib in order}
        rows.append(describe(name, clean, {lib: outcomes[lib] for lib in sorted(outcomes, key=libs.index)}))
        rows[-1]["description"] = description
        if isinstance(model, Binarize) and args.norm == "linf":
            exact_floor(model, x, y, args.eps, clean, outcomes, rows[-1])
    print_table(rows)
    if args.json:
        meta = {k: str(v) for k, v in vars(args).items()}
        Path(args.json).write_text(json.dumps({"args": meta, "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
