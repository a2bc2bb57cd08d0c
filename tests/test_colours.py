"""One colour per run: the geometry figures take the colours the report gives the same run names."""

from __future__ import annotations

import torch
from matplotlib.colors import to_hex

from advlab.geometry import analysis_plots, profile_plots
from advlab.report.plotting import colours_for, report_run_names, run_colours
from advlab.store import Store


def test_colours_for_agrees_with_the_report():
    names = ["zeta", "adversarial", "standard", "fgsm-rs"]
    assert colours_for(["standard", "adversarial"], names) == {
        "standard": run_colours(names)["standard"], "adversarial": run_colours(names)["adversarial"]}
    assert colours_for(["standard", "adversarial"]) == run_colours(["standard", "adversarial"])
    assert colours_for(["b", "a"]) == colours_for(["a", "b"])  # the order of the labels does not matter
    outside = colours_for(["standard", "my-file.pt"], names)  # not a run: an unused colour
    assert outside["standard"] == run_colours(names)["standard"]
    assert outside["my-file.pt"] not in run_colours(names).values()


def _capture(monkeypatch, module) -> list:
    figures = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figures.append(fig) or path)
    return figures


def _line_colours(fig) -> dict[str, str]:
    return {line.get_label().split(" ")[0].rstrip(":"): to_hex(line.get_color())
            for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_two_geometry_figures_draw_a_run_in_the_same_colour(monkeypatch, tmp_path):
    names = ["adversarial", "standard", "zeta"]
    colours = colours_for(["standard", "adversarial"], names)
    values = {"standard": torch.rand(3, 5), "adversarial": torch.rand(3, 5)}
    profiles = _capture(monkeypatch, analysis_plots)
    analysis_plots.plot_eigenvalue_profiles(values, tmp_path / "a.png", colours=colours)
    bands = _capture(monkeypatch, profile_plots)
    profile_plots.plot_profile_bands({k: {"scale": v} for k, v in values.items()}, tmp_path / "b.png",
                                     h=0.5, colours=colours)
    first, second = _line_colours(profiles[0]), _line_colours(bands[0])
    assert first["standard"] == second["standard"] == run_colours(names)["standard"]
    assert first["adversarial"] == second["adversarial"] == run_colours(names)["adversarial"]
    default = _capture(monkeypatch, analysis_plots)  # without colours: the report's for these names
    analysis_plots.plot_eigenvalue_profiles(values, tmp_path / "c.png")
    assert _line_colours(default[0])["standard"] == run_colours(["standard", "adversarial"])["standard"]


def test_report_run_names_are_the_reports(tmp_path):
    from advlab.report.build import _collect

    with Store(tmp_path / "advlab.db") as store:
        store.add_run("standard", tmp_path, {})
        store.add_run("robust", tmp_path, {})
        store.add_evaluation("standard", "evaluate", {}, {"norm": "linf", "eps": 0.1})
        store.add_evaluation(None, "evaluate", {}, {"norm": "linf", "eps": 0.1})
        store.add_evaluation("extra", "minimal-norm", {}, {"norms": []})
        store.add_evaluation("robust", "geometry", {}, {})
        data = _collect(store)
        stats = {r["run_name"] for r in data["by_kind"].get("minimal-norm", [])}
        expected = {*(r["name"] for r in data["runs"]), *data["evaluations"], *stats}
        assert set(report_run_names(store)) == expected == {"standard", "robust", "model", "extra"}
