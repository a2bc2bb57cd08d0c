"""Attack benchmark: advlab side by side with torchattacks, foolbox and ART.

Same model, same batch, same settings (eps, steps, step size, no random start unless every
library uses one). For each attack and library: the median wall time per batch over ``--reps``
interleaved repetitions (A B C A B C ...), the robust accuracy (bounded attacks) or the success
rate and median L2 norm (minimal-norm attacks), and the time of the bare forward(+backward) passes
the attack nominally needs on the same batch. Libraries that are not installed are skipped (run
``bash benchmarks/setup_peers.sh`` and use ``benchmarks/.venv-peers/bin/python`` to get them).

    benchmarks/.venv-peers/bin/python benchmarks/attacks.py --quick          # smoke run
    benchmarks/.venv-peers/bin/python benchmarks/attacks.py --reps 7 --json out.json
    .venv/bin/python benchmarks/attacks.py --dataset digits --quick          # advlab alone

Never part of the test suite; timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advlab.attacks as A
from advlab.attacks import model_guard
from advlab.threat import ThreatModel, lp_norm

LOG = logging.getLogger("benchmarks.attacks")
PEERS = ("torchattacks", "foolbox", "art")


# ------------------------------------------------------------------------------ data and model
def load_split(dataset: str, split: str) -> tuple[Tensor, Tensor]:
    """x (N, C, H, W) in [0, 1] and y (N,), through advlab.data (or a bare IDX reader)."""
    try:
        from advlab.data import load_dataset
    except ImportError:  # advlab.data not there yet: read the Debian package's IDX files
        return _read_idx(dataset, split)
    ds = load_dataset(dataset, split)
    return ds.x, ds.y


def _read_idx(dataset: str, split: str) -> tuple[Tensor, Tensor]:
    import gzip

    if dataset != "fashion-mnist":
        raise SystemExit(f"without advlab.data only fashion-mnist can be read, not {dataset}")
    root = Path("/usr/share/datasets/fashion-mnist")
    prefix = "train" if split == "train" else "t10k"
    images = np.frombuffer(gzip.open(root / f"{prefix}-images-idx3-ubyte.gz").read()[16:], np.uint8)
    labels = np.frombuffer(gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    x = torch.tensor(images.reshape(-1, 1, 28, 28), dtype=torch.float32) / 255.0
    return x, torch.tensor(labels, dtype=torch.int64)


def small_cnn(input_shape: tuple[int, ...], classes: int = 10) -> nn.Module:
    """Two conv+pool blocks and two linear layers (the benchmark's fixed architecture)."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, classes))


def get_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """Train the CNN once (seeded) and cache its weights under ``--cache-dir``."""
    from safetensors.torch import load_file, save_file

    x, y = load_split(args.dataset, "train")
    x, y = x[: args.train_samples], y[: args.train_samples]
    model = small_cnn(tuple(x.shape[1:]))
    path = Path(args.cache_dir) / f"cnn-{args.dataset}-{len(x)}-{args.epochs}ep.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.to(device).eval()
    LOG.info("training the CNN on %d %s images for %d epochs -> %s", len(x), args.dataset, args.epochs, path)
    torch.manual_seed(0)
    model = model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        for index in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(model(x[index].to(device)), y[index].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


# ------------------------------------------------------------------------------------ the rows
@dataclass
class Row:
    """One attack configuration: a runner per library and the bare passes it needs."""

    name: str
    kind: str  # "bounded" | "minimal"
    norm: str
    eps: float | None
    passes: tuple[int, int, int]  # (forward+backward passes, backwards per pass, extra forwards)
    runners: dict[str, Callable[[], object]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # the points the bare passes run on (pass k on inputs[k % len], extra forwards on the last);
    # None: the clean batch. PGD rows use the iterates the attack visits (see pgd_iterates).
    inputs: list[Tensor] | None = None
    slow: tuple[str, ...] = ()  # peers that take minutes per batch here: left out by --quick


def import_peers(wanted: list[str]) -> dict[str, object]:
    found = {}
    for name in wanted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found[name] = importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any import failure means "not available"
            LOG.warning("peer %s not available (%s: %s)", name, type(error).__name__, error)
    return found


def build_rows(cfg: dict, model: nn.Module, x: Tensor, y: Tensor, peers: dict[str, object]) -> list[Row]:
    """Every attack with the runners of the libraries that implement it (comparable settings)."""
    linf, l2 = cfg["eps_linf"], cfg["eps_l2"]
    s, q, df, cw, fmn_steps = cfg["pgd_steps"], cfg["queries"], cfg["deepfool_steps"], cfg["cw"], cfg["fmn_steps"]
    rows = [
        Row(f"pgd-{s} linf", "bounded", "linf", linf, (s, 1, 1)),
        Row(f"pgd-{s} l2", "bounded", "l2", l2, (s, 1, 1)),
        Row(f"apgd-ce-{cfg['apgd_steps']} linf", "bounded", "linf", linf, (cfg["apgd_steps"], 1, 1)),
        Row(f"deepfool-{df} l2", "minimal", "l2", None, (df, 10, 0), slow=("torchattacks", "art")),
        Row(f"cw-{cw[0]}x{cw[1]} l2", "minimal", "l2", None, (cw[0] * cw[1], 1, 0), slow=("art",)),
        Row(f"fmn-{fmn_steps} l2", "minimal", "l2", None, (fmn_steps, 1, 0)),
        Row(f"square-{q} linf", "bounded", "linf", linf, (0, 0, q + 1)),
    ]
    pgd, (apgd, dfool, cwr, fmn, square) = rows[:2], rows[2:]
    for row, eps in zip(pgd, (linf, l2)):
        step = 2.5 * eps / s
        threat = ThreatModel(row.norm, eps)
        row.runners["advlab"] = lambda t=threat, a=step: A.pgd(model, x, y, t, steps=s, step_size=a)
        # the same attack with early_stop=True: fooled points leave the batch (same robust accuracy)
        row.runners["advlab-es"] = lambda t=threat, a=step: A.pgd(model, x, y, t, steps=s, step_size=a,
                                                                  early_stop=True)
        row.inputs = pgd_iterates(model, x, y, threat, s, step)
    apgd.runners["advlab"] = lambda: A.apgd(model, x, y, ThreatModel("linf", linf), steps=cfg["apgd_steps"],
                                            generator=torch.Generator(x.device).manual_seed(0))
    dfool.runners["advlab"] = lambda: A.deepfool(model, x, y, steps=df, overshoot=0.02, n_target_classes=10)
    cwr.runners["advlab"] = lambda: A.cw(model, x, y, c=1.0, binary_steps=cw[0], steps=cw[1], lr=0.01)
    fmn.runners["advlab"] = lambda: A.fmn(model, x, y, steps=fmn_steps)
    square.runners["advlab"] = lambda: A.square(model, x, y, ThreatModel("linf", linf), queries=q,
                                                generator=torch.Generator(x.device).manual_seed(0))
    if "torchattacks" in peers:
        ta = peers["torchattacks"]
        for row, cls, eps in zip(pgd, (ta.PGD, ta.PGDL2), (linf, l2)):
            row.runners["torchattacks"] = _call(cls(model, eps=eps, alpha=2.5 * eps / s, steps=s, random_start=False), x, y)
        apgd.runners["torchattacks"] = _call(ta.APGD(model, norm="Linf", eps=linf, steps=cfg["apgd_steps"],
                                                     n_restarts=1, loss="ce", seed=0), x, y)
        dfool.runners["torchattacks"] = _call(ta.DeepFool(model, steps=df, overshoot=0.02), x, y)
        cwr.notes.append("torchattacks: CW has no binary search over c (not comparable)")
        square.runners["torchattacks"] = _call(ta.Square(model, norm="Linf", eps=linf, n_queries=q, n_restarts=1,
                                                         p_init=0.8, loss="margin", seed=0), x, y)
    if "foolbox" in peers:
        fb = peers["foolbox"]
        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0))
        for row, cls, eps in zip(pgd, (fb.attacks.LinfPGD, fb.attacks.L2PGD), (linf, l2)):
            attack = cls(abs_stepsize=2.5 * eps / s, steps=s, random_start=False)
            row.runners["foolbox"] = lambda a=attack, e=eps: a(fmodel, x, y, epsilons=e)[1]
        for row, attack in ((dfool, fb.attacks.L2DeepFoolAttack(steps=df, candidates=10, overshoot=0.02)),
                            (cwr, fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw[0], steps=cw[1],
                                                                   stepsize=0.01, initial_const=1.0)),
                            (fmn, fb.attacks.L2FMNAttack(steps=fmn_steps))):
            row.runners["foolbox"] = lambda a=attack: a(fmodel, x, y, epsilons=None)[1]
    if "art" in peers:
        _add_art(rows, cfg, model, x, y)
    return rows


def _call(attack: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    return lambda: attack(x, y)


def _add_art(rows: list[Row], cfg: dict, model: nn.Module, x: Tensor, y: Tensor) -> None:
    """ART works on numpy arrays: the batch is converted once, outside the timed region."""
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        CarliniL2Method,
        DeepFool,
        ProjectedGradientDescentPyTorch,
        SquareAttack,
    )
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0),
                            device_type="gpu" if x.is_cuda else "cpu")
    x_np, y_np, n = x.cpu().numpy(), y.cpu().numpy(), len(x)
    linf, l2, s, cw = cfg["eps_linf"], cfg["eps_l2"], cfg["pgd_steps"], cfg["cw"]
    attacks = [
        ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=linf, eps_step=2.5 * linf / s, max_iter=s,
                                        num_random_init=0, batch_size=n, verbose=False),
        ProjectedGradientDescentPyTorch(clf, norm=2, eps=l2, eps_step=2.5 * l2 / s, max_iter=s,
                                        num_random_init=0, batch_size=n, verbose=False),
        AutoProjectedGradientDescent(clf, norm=np.inf, eps=linf, eps_step=2 * linf, max_iter=cfg["apgd_steps"],
                                     nb_random_init=1, batch_size=n, loss_type="cross_entropy", verbose=False),
        DeepFool(clf, max_iter=cfg["deepfool_steps"], epsilon=0.02, nb_grads=10, batch_size=n, verbose=False),
        CarliniL2Method(clf, binary_search_steps=cw[0], max_iter=cw[1], learning_rate=0.01, initial_const=1.0,
                        batch_size=n, verbose=False),
        None,  # no FMN in ART
        SquareAttack(clf, norm=np.inf, eps=linf, max_iter=cfg["queries"], p_init=0.8, nb_restarts=1,
                     batch_size=n, verbose=False),
    ]
    for row, attack in zip(rows, attacks):
        if attack is not None:
            row.runners["art"] = lambda a=attack: a.generate(x=x_np, y=y_np)


# ------------------------------------------------------------------------------------- running
def steady_malloc() -> bool:
    """Stop glibc from handing freed memory back to the kernel between passes (benchmark only).

    By default glibc returns large freed blocks (mmap) and the top of the heap (trim) to the
    kernel, so the next pass faults the pages in again. How often depends on the heap's history,
    not on the attack: in one process the same PGD loop measured 3 000 to 69 000 minor page
    faults per run (~1 us each, up to ~7 % of its time) depending on what had run before. With
    fixed thresholds every library and the bare passes run on warm pages and the ratios measure
    the attacks. Returns False where there is no glibc ``mallopt``.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return all(libc.mallopt(option, value) == 1 for option, value in (
            (m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)))
    except (OSError, AttributeError):
        return False


def pgd_iterates(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, steps: int,
                 step_size: float) -> list[Tensor]:
    """The ``steps + 1`` points plain PGD from ``x`` visits (x itself first, the last iterate last).

    The bare passes of a PGD row run on these, not ``steps`` times on the clean batch: the
    kernels' cost depends on the data (max-pooling and the ReLU backward are ~15 % slower on a
    perturbed image than on a clean one, whose background is exactly 0), so passes on ``x`` alone
    would be a lower bound no attack can reach.
    """
    points = [x.clone()]
    with model_guard(model):
        for _ in range(steps):
            x_req = points[-1].detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
            points.append(threat.project(x, threat.step(points[-1], grad, step_size)))
    return points


def bare_passes(model: nn.Module, inputs: list[Tensor], y: Tensor, passes: tuple[int, int, int]) -> None:
    """The forward(+backward) passes an attack nominally needs, with nothing else around them:
    pass ``k`` on ``inputs[k % len(inputs)]``, the extra forwards on ``inputs[-1]``."""
    grads, backwards, forwards = passes
    with model_guard(model):
        for k in range(grads):
            x_req = inputs[k % len(inputs)].detach().requires_grad_(True)
            logits = model(x_req)
            if backwards == 1:
                torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_req)
            for k in range(backwards if backwards > 1 else 0):
                torch.autograd.grad(logits[:, k].sum(), x_req, retain_graph=k < backwards - 1)
        with torch.no_grad():
            for _ in range(forwards):
                model(inputs[-1])


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def quality(row: Row, model: nn.Module, x: Tensor, y: Tensor, out: object) -> dict[str, float]:
    """Robust accuracy (bounded) or success rate and median L2 norm of the fooled (minimal)."""
    x_adv = torch.as_tensor(np.asarray(out) if not isinstance(out, Tensor) else out).to(x)
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
        fooled = model(x_adv).argmax(dim=1) != y
    if row.kind == "bounded":
        inside = ThreatModel(row.norm, row.eps).contains(x, x_adv, atol=1e-4)
        return {"robust_acc": (~fooled).float().mean().item(), "valid": inside.float().mean().item()}
    norms = lp_norm(x_adv - x, "l2")[correct & fooled]
    return {"success": fooled[correct].float().mean().item(),
            "median_l2": norms.median().item() if norms.numel() else math.inf}


def run_row(row: Row, model: nn.Module, x: Tensor, y: Tensor, reps: int, device: torch.device,
            slow_limit: float) -> dict:
    """Interleaved repetitions; a library whose first run takes more than ``slow_limit`` seconds is
    not repeated (its single time is reported, with a note).

    Repetition ``r`` runs the libraries and baselines in the order rotated by ``r`` (A B C bare,
    B C bare A, ...), so no library always runs right after the same neighbour.
    """
    baselines = {"bare": row.inputs or [x], **({"bare-clean": [x]} if row.inputs else {})}
    jobs: dict[str, Callable[[], object]] = {
        **row.runners, **{name: (lambda i=inputs: bare_passes(model, i, y, row.passes)) for name, inputs in baselines.items()}}
    names = list(jobs)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, object] = {}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            if rep and times[name][0] > slow_limit:
                continue
            seconds, out = timed(jobs[name], device)
            times[name].append(seconds)
            if name in row.runners:
                outputs[name] = out
    result = {"attack": row.name, "notes": list(row.notes), "libs": {}}
    for name, values in times.items():
        if len(values) < reps:
            result["notes"].append(f"{name}: ran once only (slower than --slow-limit {slow_limit:g} s)")
        entry = {"median_s": statistics.median(values), "times_s": values}
        if name in outputs:
            entry.update(quality(row, model, x, y, outputs[name]))
        result["libs"][name] = entry
    add_paired_ratios(result)
    return result


def paired_ratio(mine: list[float], theirs: list[float], boot: int = 4000) -> dict[str, float]:
    """Median over repetitions of ``mine[r] / theirs[r]`` with a 95 % bootstrap interval.

    Runs of the same repetition sit next to each other in time, so their ratio cancels the slow
    drifts of the machine that widen the spread of either list on its own (percentile bootstrap
    over repetitions, fixed seed).
    """
    ratios = [a / b for a, b in zip(mine, theirs)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(boot))
    return {"median": statistics.median(ratios), "low": medians[int(0.025 * boot)],
            "high": medians[int(0.975 * boot) - 1], "n": len(ratios)}


def add_paired_ratios(result: dict) -> None:
    """``paired`` on every advlab entry: its paired ratio to the fastest peer (by median time),
    when both ran on every repetition."""
    libs = result["libs"]
    peers = [name for name in libs if name in PEERS]
    if not peers:
        return
    fastest = min(peers, key=lambda name: libs[name]["median_s"])
    for name, entry in libs.items():
        if name.startswith("advlab") and len(entry["times_s"]) == len(libs[fastest]["times_s"]) > 1:
            entry["paired"] = {"peer": fastest, **paired_ratio(entry["times_s"], libs[fastest]["times_s"])}


def print_table(results: list[dict]) -> None:
    header = (f"{'attack':<20} {'library':<13} {'median s':>9} {'quality':<28} {'/fastest peer':>13} {'/bare':>7}"
              f"  {'paired /fastest peer [95% CI]':<30}")
    print(header + "\n" + "-" * len(header))
    for res in results:
        libs = res["libs"]
        peer_times = [v["median_s"] for k, v in libs.items() if k in PEERS]
        fastest, bare = (min(peer_times) if peer_times else None), libs["bare"]["median_s"]
        for name, entry in libs.items():
            if "robust_acc" in entry:
                text = f"robust acc {entry['robust_acc']:.3f}" + ("" if entry["valid"] == 1 else f" valid {entry['valid']:.2f}")
            elif "success" in entry:
                text = f"success {entry['success']:.3f} med {entry['median_l2']:.3f}"
            else:
                text = "(bare passes on x)" if name == "bare-clean" else "(bare passes)"
            ratio_peer = f"{entry['median_s'] / fastest:.2f}" if fastest and name.startswith("advlab") else ""
            ratio_bare = f"{entry['median_s'] / bare:.2f}" if name != "bare" and bare > 0 else ""
            p = entry.get("paired")
            paired = f"{p['median']:.3f} [{p['low']:.3f}, {p['high']:.3f}] vs {p['peer']}" if p else ""
            print(f"{res['attack']:<20} {name:<13} {entry['median_s']:>9.3f} {text:<28} {ratio_peer:>13} {ratio_bare:>7}"
                  f"  {paired}")
        for note in res["notes"]:
            print(f"{'':<20} note: {note}")


def settings(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {"eps_linf": args.eps_linf, "eps_l2": args.eps_l2, "pgd_steps": 10,
            "apgd_steps": 20 if quick else 100, "deepfool_steps": 50, "cw": (2, 50) if quick else (5, 100),
            "fmn_steps": 20 if quick else 100, "queries": 100 if quick else 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--quick", action="store_true", help="small batch, fewer steps and reps: a smoke run")
    parser.add_argument("--batch", type=int, default=None, help="test points attacked (default 256, quick 64)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, quick 2)")
    parser.add_argument("--eps-linf", type=float, default=0.1)
    parser.add_argument("--eps-l2", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (fashion-mnist: 2, quick 1; digits: 30)")
    parser.add_argument("--train-samples", type=int, default=None, help="default all (quick 10000)")
    parser.add_argument("--libs", default="advlab," + ",".join(PEERS), help="comma-separated subset")
    parser.add_argument("--attacks", default="", help="only rows whose name contains one of these words")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--cache-dir", default="runs/benchmarks", help="where the trained CNN is cached")
    parser.add_argument("--malloc", choices=["steady", "default"], default="steady",
                        help="steady: glibc keeps freed memory (no page-fault noise; see steady_malloc)")
    parser.add_argument("--slow-limit", type=float, default=120.0,
                        help="a library whose first run takes longer is not repeated (seconds)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # peers log a lot at INFO
    LOG.setLevel(logging.INFO)
    args.batch = args.batch or (64 if args.quick else 256)
    args.reps = args.reps or (2 if args.quick else 5)
    args.epochs = args.epochs or (30 if args.dataset == "digits" else 1 if args.quick else 2)
    args.train_samples = args.train_samples or (10000 if args.quick else 10**9)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = "steady" if args.malloc == "steady" and steady_malloc() else "default"
    from advlab._utils import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    np.random.seed(0)
    model = get_model(args, device)
    x_test, y_test = load_split(args.dataset, "test")
    x, y = x_test[: args.batch].to(device), y_test[: args.batch].to(device)
    wanted = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    peers = import_peers([lib for lib in wanted if lib in PEERS])
    missing = [lib for lib in wanted if lib in PEERS and lib not in peers]
    with torch.no_grad():
        clean = (model(x).argmax(dim=1) == y).float().mean().item()
    print(f"dataset {args.dataset}, batch {len(x)}, device {device}, threads {torch.get_num_threads()}, "
          f"reps {args.reps}, clean accuracy {clean:.3f}, torch {torch.__version__}, malloc {malloc}")
    versions = ", ".join(f"{name} {getattr(module, '__version__', '?')}" for name, module in peers.items())
    print(f"peers: {versions or 'none'}"
          + (f" (missing: {', '.join(missing)}; advlab runs alone there)" if missing else ""))
    rows = build_rows(settings(args), model, x, y, peers)
    bare_passes(model, [x], y, (3, 1, 3))  # warm-up: first-call costs hit no timed run
    words = [w for w in args.attacks.split(",") if w]
    results = []
    for row in rows:
        if words and not any(w in row.name for w in words):
            continue
        row.runners = {k: v for k, v in row.runners.items() if k.split("-")[0] in wanted}
        if args.quick and any(k in row.slow for k in row.runners):
            row.notes.append(f"left out by --quick (minutes per batch): {', '.join(row.slow)}")
            row.runners = {k: v for k, v in row.runners.items() if k not in row.slow}
        LOG.info("running %s (%s)", row.name, ", ".join(row.runners))
        results.append(run_row(row, model, x, y, args.reps, device, args.slow_limit))
    print_table(results)
    if args.json:
        meta = {"dataset": args.dataset, "batch": len(x), "device": str(device), "reps": args.reps, "malloc": malloc,
                "clean_accuracy": clean, "settings": settings(args),
                "peers": {k: getattr(v, "__version__", "?") for k, v in peers.items()}}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
