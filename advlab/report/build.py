"""``build_report``: one self-contained HTML file from the results store.

Sections follow the story of the field: how fragile the models are (robustness curves, attacks,
minimal perturbations, gallery, universal and spatial perturbations), what training did, and why
(boundaries, landscapes, curvature, random vs adversarial noise). Any stored record may carry
``figures`` (name -> PNG path) and ``captions``; they are inlined into the matching section.
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import advlab
from advlab._utils import atomic_write
from advlab.report import figures as fig
from advlab.report.certify_section import certify_section
from advlab.report.geometry_sections import comparison_section, reproduce_section
from advlab.report.html import esc, image, page, paragraph, table
from advlab.store import Store

logger = logging.getLogger(__name__)

#: Geometry figure names -> report section, matched by substring.
GEOMETRY_SECTIONS = [
    (("relu",), "Random ReLU networks"),
    (("spiral",), "Spirals: small vs over-parametrised MLP"),
    (("cross", "boundar", "region"), "Decision boundaries"),
    (("landscape", "loss", "surface"), "Loss landscapes"),
    (("eigen", "spectrum", "hessian", "bound", "curvature"), "Curvature"),
    (("noise", "ratio"), "Random noise vs adversarial perturbations"),
]


def _figures_of(record: dict[str, Any]) -> list[tuple[str, Path, str]]:
    """(name, path, caption) of every existing figure a record lists."""
    result = record["result"]
    base = Path(result.get("out_dir") or (result.get("metadata") or {}).get("out_dir") or ".")
    captions = result.get("captions", {})
    out = []
    for name, rel in (result.get("figures") or {}).items():
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        if path.exists():
            out.append((name, path, captions.get(name, f"{record['run_name']}: {name}")))
        else:
            logger.warning("figure %s of record %s is missing: %s", name, record["id"], path)
    return out


def _runs_section(runs: list[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        c, m = run["config"], run["metadata"]
        objective = c.get("objective", {})
        params = ", ".join(f"{k}={v}" for k, v in (objective.get("params") or {}).items())
        rows.append([run["name"], c.get("dataset"), c.get("model"), objective.get("name", c.get("defense")),
                     params, c.get("epochs"), c.get("lr"), m.get("test_acc"), m.get("best_epoch"),
                     m.get("time_s")])
    return table(["run", "dataset", "model", "defense", "defense parameters", "epochs", "lr",
                  "test accuracy", "best epoch", "train time (s)"], rows, percent_columns=[7])


def _verdict(record: dict[str, Any]) -> str:
    """An evaluation record's verdict, as ``EvaluationResult.verdict`` words it: ``reliable`` or
    ``suspicious: <flag codes>`` (with the expected accuracy over draws of a randomised model)."""
    codes = list(dict.fromkeys(w["code"] for w in record.get("warnings", [])))
    verdict = "reliable" if not codes else "suspicious: " + ", ".join(codes)
    expected = record.get("expected_accuracy") or {}
    if "robust" in expected:
        mean, low, high = expected["robust"]
        verdict += f" (expected over {record.get('draws', '?')} draws {mean:.1%} [{low:.1%}, {high:.1%}])"
    return verdict


def _attack_section(evaluations: dict[str, list[dict[str, Any]]]) -> str:
    rows, flags = [], {}
    for run, results in sorted(evaluations.items()):
        for r in sorted(results, key=lambda r: (r["norm"], r["eps"])):
            breaks = "; ".join(f"{k}: {int(v['breaks'])}/{int(v['ran_on'])}" for k, v in r["per_attack"].items())
            rows.append([run, r["norm"], r["eps"], r["preset"], r["n"], r["clean_accuracy"],
                         r["robust_accuracy"], _verdict(r), breaks, round(r["time_s"], 1)])
            for w in r.get("warnings", []):
                flags[(run, w["code"])] = w
    html = table(["model", "norm", "eps", "preset", "points", "clean", "robust", "verdict",
                  "broken by (broken/attacked)", "time (s)"], rows, percent_columns=[5, 6])
    for (run, _), w in sorted(flags.items()):
        html += (f'<div class="flag"><b>{esc(run)}: {esc(w["code"])}</b> ({esc(w["detail"])})<br>'
                 f'{esc(w["meaning"])}<br><i>{esc(w["advice"])}</i></div>')
    if not flags:
        html += paragraph("No sanity flag was raised: no sign of gradient masking in these evaluations.")
    return html


def _headline(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    items = records[-1]["result"].get("headline", [])
    cells = "".join(f"<div><span class='muted'>{esc(i['label'])}</span><b>{esc(i['value'])}</b>"
                    f"<span class='muted'>{esc(i.get('note', ''))}</span></div>" for i in items)
    return f'<div class="headline">{cells}</div>'


def _collect(store: Store) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in store.get_evaluations():
        by_kind[record["kind"]].append(record)
    evaluations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in by_kind["evaluate"]:
        evaluations[record["run_name"] or "model"].append(record["result"])
    return {"runs": store.list_runs(), "by_kind": by_kind, "evaluations": dict(evaluations),
            "metrics": {run["name"]: store.get_metrics(run["name"]) for run in store.list_runs()}}


def _figure_sections(by_kind: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = defaultdict(list)
    for kind, title in (("gallery", "Adversarial examples"), ("universal", "Universal perturbation"),
                        ("spatial", "Spatial attack")):
        for record in by_kind.get(kind, []):
            summary = record["result"].get("summary")
            if summary:
                sections[title].append(paragraph(summary))
            sections[title] += [image(p, c) for _, p, c in _figures_of(record)]
    theory = [r for kind, records in by_kind.items() if kind.startswith("theory") for r in records]
    for record in by_kind.get("geometry", []) + theory:
        for name, path, caption in _figures_of(record):
            title = next((t for keys, t in GEOMETRY_SECTIONS if any(k in name.lower() for k in keys)),
                         "Geometry: other analyses")
            sections[title].append(image(path, caption))
    return sections


def build_report(store_path: str | Path, out: str | Path, title: str = "advlab robustness report") -> Path:
    """Render every record of the store at ``store_path`` into the HTML file ``out``."""
    store_path = Path(store_path)
    if not store_path.exists():
        raise FileNotFoundError(f"no results store at {store_path}; run advlab demo or advlab train first")
    with Store(store_path) as store:
        data = _collect(store)
    by_kind = data["by_kind"]
    sections: list[tuple[str, str]] = []
    stats = {r["run_name"]: r["result"] for r in by_kind.get("minimal-norm", [])}
    names = [*(r["name"] for r in data["runs"]), *data["evaluations"], *stats]  # one colour per run
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        sections.append(("Models and training", _runs_section(data["runs"]) + _maybe(
            fig.training_curves(data["metrics"], tmpdir / "training.png", names=names),
            "Training curves: loss and accuracy per epoch, one colour per run in every chart (validation "
            "accuracy solid, training dotted, adversarial validation dashed).")))
        sections.append(("Robustness curves", _maybe(
            fig.robustness_curves(data["evaluations"], tmpdir / "curves.png", names=names),
            "Accuracy under attack as the radius grows: the per-sample worst case over the attack "
            "ensemble, pooled across eps so the curves are monotone.") or paragraph("No evaluation stored yet.")))
        sections.append(("Attacks and sanity flags", _attack_section(data["evaluations"])))
        rows = [[run, s.get("attack"), s.get("norm"), s.get("median"), s.get("rho_adv"), s.get("success_rate")]
                for run, s in sorted(stats.items())]
        sections.append(("Minimal perturbations", (table(
            ["model", "attack", "norm", "median norm", "rho_adv = mean ||r||/||x||", "success"], rows,
            percent_columns=[5]) if rows else "") + _maybe(
            fig.norm_histograms(stats, tmpdir / "norms.png", names=names),
            "Distribution of minimal adversarial perturbations (DeepFool); rho_adv is DeepFool's "
            "robustness metric.")))
        certified = certify_section(by_kind)
        if certified:
            sections.append(("Certified robustness", certified))
        for name, parts in _figure_sections(by_kind).items():
            sections.append((name, "".join(parts)))
        _geometry_sections(sections, by_kind)
        subtitle = (f"advlab {advlab.__version__} · generated "
                    f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC from {store_path}")
        document = page(title, subtitle, _headline(by_kind.get("demo", [])), sections)
    return atomic_write(out, lambda fh: fh.write(document), mode="w")


def _maybe(path: Path | None, caption: str) -> str:
    return image(path, caption) if path is not None else ""


def _geometry_sections(sections: list[tuple[str, str]], by_kind: dict[str, list[dict[str, Any]]]) -> None:
    """The paired geometry comparison and the reproductions of the seed results, when stored."""
    comparison = comparison_section(by_kind.get("geometry", []))
    if comparison:
        sections.append(("Geometry: paired comparison", comparison))
    reproduced = reproduce_section(by_kind.get("reproduce", []))
    if reproduced:
        sections.append(("Reproduced results", reproduced))
