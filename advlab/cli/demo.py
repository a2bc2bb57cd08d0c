"""``advlab demo``: the main job, end to end -- fooling is easy, defending is hard, and
adversarial training changes the geometry.

Stages: (1) train a standard ``small_cnn`` and (2) an adversarially fine-tuned copy (FGSM with
random start, Wong et al. 2020) -- both reused when already in the runs directory; (3) evaluate
both at several Linf and L2 radii with the ``standard`` preset; (4) DeepFool statistics,
the adversarial-example gallery, a universal perturbation and the spatial attack; (5) the
geometry of both models (boundaries, landscapes, curvature, random vs adversarial noise);
(6) the HTML report and the three headline numbers. ``--quick`` runs on digits with
smaller budgets and the ``fast`` evaluation preset.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from advlab.cli._common import attack_progress, echo, runs_root, setup_logging


@dataclass(frozen=True)
class DemoPlan:
    """Budgets of one demo flavour."""

    dataset: str
    epochs: int
    adv_epochs: int
    lr: float
    eps: float  # Linf radius of the defense and the headline
    l2_eps: tuple[float, ...]
    n_eval: int
    n_analysis: int
    geometry_points: int
    eigs: int
    n_train: int | None
    preset: str = "standard"  # Linf evaluation preset
    l2_preset: str = "standard"
    n_universal: int = 2000  # training points the universal perturbation is fitted on
    threads: int | None = None  # torch threads (None: torch's default)
    plane_points: int = 40  # points of the (adversarial, top-eigenvector) plane comparison


PLANS = {
    # <= 15 minutes on 2 cores: the standard preset for the Linf curve on 250 points (APGD-T and
    # Square on the adversarially trained model dominate), the fast preset for the L2 curve
    "fashion-mnist": DemoPlan("fashion-mnist", epochs=2, adv_epochs=2, lr=2e-3, eps=0.1,
                              l2_eps=(0.5, 1.0, 2.0), n_eval=250, n_analysis=250,
                              geometry_points=6, eigs=20, n_train=None, l2_preset="fast"),
    # --quick: a couple of minutes on 2 cores; the cheap "fast" preset (APGD-CE) for evaluation
    "digits": DemoPlan("digits", epochs=6, adv_epochs=3, lr=5e-3, eps=0.1, l2_eps=(0.25, 0.5, 1.0),
                       n_eval=64, n_analysis=64, geometry_points=3, eigs=8, n_train=None,
                       preset="fast", l2_preset="fast", n_universal=600, threads=1, plane_points=12),
}


def _stage(number: int, title: str) -> float:
    echo(f"\n[{number}/6] {title}", bold=True)
    return time.perf_counter()


def _done(start: float, summary: str) -> None:
    echo(f"      {summary}  ({time.perf_counter() - start:.0f} s)")


def _train_models(plan: DemoPlan, root: Path, retrain: bool, device: str, seed: int,
                  progress: bool) -> tuple[Path, Path]:
    from advlab.experiments.runs import train_run

    standard = root / f"demo-{plan.dataset}-standard"
    robust = root / f"demo-{plan.dataset}-fgsm-rs"
    common: dict[str, Any] = {"dataset": plan.dataset, "model": "small_cnn", "seed": seed,
                              "device": device, "lr": plan.lr, "progress": progress}
    started = _stage(1, "standard training of small_cnn")
    if retrain or not (standard / "train_result.json").exists():
        _print_run(train_run(standard, epochs=plan.epochs, **common))
    _done(started, f"test accuracy {_test_acc(standard):.1%} ({standard})")
    started = _stage(2, f"adversarial fine-tuning: fgsm-rs, Linf eps {plan.eps:g}")
    if retrain or not (robust / "train_result.json").exists():
        _print_run(train_run(robust, epochs=plan.adv_epochs, defense="fgsm-rs",
                             defense_params={"eps": plan.eps}, init=standard, adv_val_n=200, **common))
    _done(started, f"test accuracy {_test_acc(robust):.1%} ({robust})")
    return standard, robust


def _print_run(run: Any) -> None:
    """What ``advlab train`` prints about a finished run (an ``experiments.runs.TrainedRun``)."""
    from advlab.experiments.runs import describe_run

    for k, line in enumerate(describe_run(run)):
        echo(line, bold=k == 0)


def _test_acc(run_dir: Path) -> float:
    return float(json.loads((run_dir / "train_result.json").read_text())["test_acc"])


def _evaluate(plan: DemoPlan, models: dict[str, Any], x, y, store, seed: int,
              progress: bool) -> dict[str, Any]:
    from advlab import ThreatModel, evaluate

    presets = plan.preset if plan.l2_preset == plan.preset else f"{plan.preset}, L2 {plan.l2_preset}"
    started = _stage(3, f"robustness: Linf and L2 evaluation ({len(x)} points, {presets} preset)")
    curves: dict[str, Any] = {}
    for name, model in models.items():
        with attack_progress(f"{name} linf", enabled=progress, total=len(x)) as tick:
            linf = evaluate(model, x, y, ThreatModel("linf", plan.eps),
                            eps=[plan.eps / 2, plan.eps, 2 * plan.eps], attacks=plan.preset,
                            seed=seed, store=store, run_name=name, progress=tick)
        with attack_progress(f"{name} l2", enabled=progress, total=len(x)) as tick:
            l2 = evaluate(model, x, y, ThreatModel("l2", max(plan.l2_eps)), eps=list(plan.l2_eps),
                          attacks=plan.l2_preset, seed=seed, store=store, run_name=name,
                          progress=tick)
        curves[name] = {"linf": linf, "l2": l2}
        echo("      " + name + ": " + "; ".join(f"{r.norm} {r.eps:g}: {r.robust_accuracy:.1%}" for r in linf + l2))
    _done(started, "stored in the results store")
    return curves


def _attacks(plan: DemoPlan, models: dict[str, Any], data: Any, x, y, store, out_dir: Path,
             generator) -> dict[str, Any]:
    from advlab.experiments import story

    started = _stage(4, "minimal perturbations, gallery, universal and spatial attacks")
    stats = {name: story.minimal_norm_stage(store, name, m, x, y, generator=generator)
             for name, m in models.items()}
    first, model = next(iter(models.items()))
    story.gallery_stage(store, first, model, x, y, list(data.info.class_names), out_dir, eps=plan.eps,
                        generator=generator)
    from advlab.data import load_dataset

    fit_data = load_dataset(plan.dataset, "train", n=plan.n_universal, seed=0)
    universal = story.universal_stage(store, first, model, fit_data.x.to(x.device),
                                      fit_data.y.to(x.device), x, y, out_dir, eps=1.5 * plan.eps,
                                      max_passes=5, generator=generator)
    for name, m in models.items():
        story.spatial_stage(store, name, m, x[:100], y[:100], generator=generator)
    _done(started, "; ".join(f"{n}: median DeepFool L2 {s['median']:.3g}" for n, s in stats.items())
          + f"; universal fooling rate {universal['fooling_rate_val']:.1%}")
    return stats


def _geometry(plan: DemoPlan, models: dict[str, Any], x, y, store, out_dir: Path, generator) -> Any:
    from advlab.geometry import analyse, store_summary

    started = _stage(5, f"geometry of both models ({plan.geometry_points} points)")
    from advlab.report.plotting import colours_for, report_run_names

    summary = analyse(models, x, y, out_dir / "geometry", points=plan.geometry_points, eigs=plan.eigs,
                      directions=8, plane_points=plan.plane_points, generator=generator,
                      metadata={"dataset": plan.dataset},
                      colours=colours_for(models, report_run_names(store)))
    store_summary(store, next(iter(models)), summary)
    rows = list(summary.comparison.items())[:2]
    _done(started, "; ".join(f"{name} ratio {row['ratio']:.3g} [{row['ci'][0]:.3g}, {row['ci'][1]:.3g}] "
                             f"n={row['n']}: {row['verdict']}" for name, row in rows) or "done")
    return summary


def _headline(plan: DemoPlan, curves: dict[str, Any], models: dict[str, Any], x, y,
              generator) -> list[dict[str, str]]:
    """The three headline numbers, each with n and a 95 % interval (Wilson for accuracies, paired
    bootstrap for the DeepFool ratio); a change is called one only when the interval says so."""
    from advlab.geometry.compare_measures import deepfool_info
    from advlab.geometry.stats import paired_ratio, proportion_interval

    (std_name, std), (adv_name, adv) = list(curves.items())
    at = next(r for r in std["linf"] if r.eps == plan.eps)
    at_adv = next(r for r in adv["linf"] if r.eps == plan.eps)
    n = len(y)

    def interval(p: float) -> str:
        lo, hi = proportion_interval(round(p * n), n)
        return f"{p:.0%} [{lo:.0%}, {hi:.0%}]"

    clean_lo, _ = proportion_interval(round(at.clean_accuracy * n), n)
    _, robust_hi = proportion_interval(round(at.robust_accuracy * n), n)
    drop = "a significant drop" if robust_hi < clean_lo else "the intervals overlap: no significant drop"
    a, b = (deepfool_info(m, x, y).norm for m in models.values())
    ratio = paired_ratio(a, b, generator=generator)
    said = {"higher": "larger", "lower": "smaller"}.get(ratio.verdict, "no significant difference")
    return [
        {"label": "fooling is easy", "value": f"{at.clean_accuracy:.0%} → {at.robust_accuracy:.0%}",
         "note": f"standard model, clean {interval(at.clean_accuracy)} → Linf eps {plan.eps:g} "
                 f"{interval(at.robust_accuracy)}, n = {n}, 95 % Wilson intervals: {drop}"},
        {"label": "defending is hard", "value": f"{at_adv.robust_accuracy:.0%} robust",
         "note": f"adversarially trained, robust {interval(at_adv.robust_accuracy)}, clean "
                 f"{interval(at_adv.clean_accuracy)}, n = {n}"},
        {"label": "geometry changes", "value": f"× {ratio.ratio:.2f}",
         "note": f"minimal L2 perturbation (DeepFool), {adv_name} / {std_name}: median per-point ratio "
                 f"{ratio.ratio:.2f} [95 % CI {ratio.ci[0]:.2f}, {ratio.ci[1]:.2f}], n = {ratio.n}: {said}"},
    ]


def demo(
    dataset: Annotated[str, typer.Option(help="fashion-mnist (default) or digits (no data files needed).")] = "fashion-mnist",
    quick: Annotated[bool, typer.Option(help="The two-minute version on digits.")] = False,
    out: Annotated[Path | None, typer.Option(help="Runs directory (default $ADVLAB_RUNS or ./runs).")] = None,
    retrain: Annotated[bool, typer.Option(help="Train again even if the demo runs exist.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """The main job: train, attack, defend, explain -- and write the HTML report."""
    setup_logging()
    import torch

    from advlab.cli._runs import load_run
    from advlab.data import load_dataset
    from advlab.report import build_report
    from advlab.store import Store

    key = "digits" if quick else dataset.replace("_", "-").lower()
    if key not in PLANS:
        raise ValueError(f"the demo runs on {', '.join(PLANS)}; got {dataset!r}")
    plan = PLANS[key]
    if plan.threads:  # tiny models: intra-op threads cost more than they give
        torch.set_num_threads(plan.threads)
    root = runs_root(out)
    echo(f"== advlab demo on {plan.dataset} (runs in {root}) ==", bold=True)
    total = time.perf_counter()
    standard, robust = _train_models(plan, root, retrain, device, seed, progress)
    models = {p.name: load_run(p, device=device).model for p in (standard, robust)}
    data = load_dataset(plan.dataset, "test", n=plan.n_eval, seed=seed)
    target = next(next(iter(models.values())).parameters()).device
    x, y = data.x.to(target), data.y.to(target)
    generator = torch.Generator(device=target).manual_seed(seed)
    with Store(root / "advlab.db") as store:
        curves = _evaluate(plan, models, x, y, store, seed, progress)
        _attacks(plan, models, data, x[:plan.n_analysis], y[:plan.n_analysis], store, root, generator)
        _geometry(plan, models, x, y, store, root, generator)
        headline = _headline(plan, curves, models, x[:plan.n_analysis], y[:plan.n_analysis], generator)
        store.add_evaluation(None, "demo", {"dataset": plan.dataset, "seed": seed}, {"headline": headline})
    started = _stage(6, "report")
    report = build_report(root / "advlab.db", root / "report.html", title=f"advlab demo: {plan.dataset}")
    _done(started, str(report))
    echo(f"\nreport: {report.resolve()}", bold=True)
    for item in headline:
        echo(f"  {item['label']:<18} {item['value']:<14} {item['note']}")
    echo(f"  (n = {len(y)} test points for accuracies; the DeepFool ratio on those of the first "
         f"{min(len(y), plan.n_analysis)} that both models classify correctly; an interval too "
         "wide to conclude is reported as such)")
    echo(f"total time {time.perf_counter() - total:.0f} s")
