"""The HTML report from a store: self-contained, every section present, figures inline."""

from __future__ import annotations

import re

import pytest

from advlab import ThreatModel, evaluate
from advlab.report import build_report
from advlab.report.html import table
from advlab.report.plotting import new_figure, save_figure
from advlab.store import Store


@pytest.fixture()
def store_with_records(tmp_path, digits_mlp, digits):
    _, _, x, y = digits
    db = tmp_path / "advlab.db"
    with Store(db) as store:
        store.add_run("mlp", tmp_path / "mlp", {"dataset": "digits", "model": "mlp", "epochs": 3,
                                                "objective": {"name": "none", "params": {}}},
                      {"test_acc": 0.96, "best_epoch": 3})
        for epoch in (1, 2, 3):
            store.log_metrics("mlp", epoch, {"train_loss": 1.0 / epoch, "val_acc": 0.8 + 0.05 * epoch})
        evaluate(digits_mlp, x[:32], y[:32], ThreatModel("linf", 0.1), eps=[0.05, 0.1],
                 attacks="fast", store=store, run_name="mlp")
        fig, ax = new_figure(width=3, height=2)
        ax.plot([0, 1], [1, 0])
        png = save_figure(fig, tmp_path / "cross_section.png")
        store.add_evaluation("mlp", "geometry", {}, {"figures": {"cross_section": png.name},
                                                     "captions": {"cross_section": "a plane"},
                                                     "metadata": {"out_dir": str(tmp_path)}})
        store.add_evaluation("mlp", "minimal-norm", {}, {"attack": "deepfool", "norm": "l2",
                                                         "norms": [0.5, 0.7, None, 1.1], "median": 0.7,
                                                         "rho_adv": 0.12, "success_rate": 0.75})
        store.add_evaluation(None, "demo", {}, {"headline": [{"label": "robust", "value": "12%"}]})
    return db


def test_report_is_self_contained(store_with_records, tmp_path):
    out = build_report(store_with_records, tmp_path / "report.html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for title in ("Models and training", "Robustness curves", "Attacks and sanity flags",
                  "Minimal perturbations", "Decision boundaries"):
        assert f">{title}</h2>" in text and 'href="#' in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert "a plane" in text and "12%" in text


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store"):
        build_report(tmp_path / "nothing.db", tmp_path / "r.html")


def test_table_escapes_and_formats():
    html = table(["name", "acc"], [["<b>x</b>", 0.5]], percent_columns=[1])
    assert "&lt;b&gt;" in html and "50.0%" in html and 'data-v="0.5"' in html


def test_one_figure_helper_for_report_and_geometry(tmp_path):
    import advlab.experiments.random_relu as relu
    import advlab.geometry.boundary as boundary
    import advlab.report.figures as figures

    fig, axes = new_figure(ncols=3, nrows=2, width=2.0, height=1.5, squeeze=False)
    assert axes.shape == (2, 3) and tuple(fig.get_size_inches()) == (6.0, 3.0)
    fig, axes = new_figure(ncols=2)
    assert len(axes) == 2
    axes[0].plot([0, 1], [0, 1])
    path = save_figure(fig, tmp_path / "new" / "folder" / "f.png")  # the folder is created
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for module in (figures, boundary, relu):
        assert module.new_figure is new_figure and module.save_figure is save_figure


def _titles_inside(fig) -> bool:
    fig.canvas.draw()
    box = fig.bbox
    texts = [ax.title for ax in fig.axes] + ([fig._suptitle] if fig._suptitle is not None else [])
    for t in texts:
        if t.get_text():
            e = t.get_window_extent()
            if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
                return False
    return True


def test_one_colour_per_run_in_every_chart(tmp_path, monkeypatch):
    import advlab.report.figures as figures
    from advlab.report.plotting import run_colour, run_colours

    names = ["zeta-model", "alpha-model", "a-very-long-run-name-that-would-crowd-the-legend"]
    assert run_colours(names) == run_colours(list(reversed(names)))  # order does not matter
    assert len(set(run_colours(names).values())) == 3
    kept = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: kept.append(fig) or path)
    # the robustness curves lack "alpha-model": zeta keeps its colour all the same
    figures.robustness_curves({"zeta-model": [{"norm": "linf", "eps": 0.1, "robust_accuracy": 0.5,
                                               "clean_accuracy": 0.9}]}, tmp_path / "c.png", names=names)
    figures.norm_histograms({n: {"norms": [0.1, 0.2, 0.3]} for n in names}, tmp_path / "h.png", names=names)
    figures.training_curves({n: [{"epoch": 1, "metrics": {"train_loss": 1.0, "val_acc": 0.5}},
                                 {"epoch": 2, "metrics": {"train_loss": 0.5, "val_acc": 0.7}}] for n in names},
                            tmp_path / "t.png", names=names)
    curves, hist, training = kept
    from matplotlib.colors import to_hex
    line = curves.axes[0].get_lines()[0]
    assert line.get_label() == "zeta-model"
    assert to_hex(line.get_color()) == run_colour("zeta-model", names)
    zeta_bar = next(p for p in hist.axes[0].patches if p.get_label().startswith("zeta-model"))
    assert to_hex(zeta_bar.get_facecolor(), keep_alpha=False) == run_colour("zeta-model", names)
    loss_lines = {line.get_label(): to_hex(line.get_color()) for line in training.axes[0].get_lines()}
    assert loss_lines["zeta-model"] == run_colour("zeta-model", names)
    acc_colours = {to_hex(line.get_color()) for line in training.axes[1].get_lines()}
    assert acc_colours == set(run_colours(names).values())  # accuracy lines: run colours only
    for fig in kept:
        assert _titles_inside(fig)


def test_long_titles_are_wrapped_inside_the_figure(tmp_path):
    from advlab.report.plotting import tidy_figure

    fig, axes = new_figure(ncols=2, width=2.5, height=3.0)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_title("a long title " * 5)
    fig.suptitle("an even longer figure title that goes on " * 3)
    assert not _titles_inside(fig)  # as drawn, the titles leave the figure
    tidy_figure(fig)
    assert _titles_inside(fig) and "\n" in axes[0].get_title()
    assert save_figure(fig, tmp_path / "t.png").exists()


def test_crowded_tick_labels_are_rotated_or_thinned():
    from advlab.report.plotting import declutter_ticks, tidy_figure

    fig, ax = new_figure(width=2.0, height=2.0)
    ax.plot([0.0001, 0.0002], [0, 1])
    ax.set_xticks([0.0001 + 0.00001 * i for i in range(11)])
    tidy_figure(fig)
    labels = ax.get_xticklabels()
    assert labels[0].get_rotation() == 30
    declutter_ticks(fig)  # idempotent: nothing left overlapping to change
