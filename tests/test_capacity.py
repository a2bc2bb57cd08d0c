"""The capacity study's frontier, paired differences and verdict on hand-made cells (no training)."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.experiments.capacity import (
    CapacityConfig,
    capacity_differences,
    cell_dir,
    defense_params,
    frontier,
    machine,
    paired_difference,
    run_cell,
    saved_cells,
    step_cost,
    variant,
)
from advlab.experiments.capacity_report import findings, plot, table
from advlab.experiments.reproduce_capacity import _pooled, _verdict


def make_cell(model, defense, epochs, cpu_s, robust_correct, clean=0.9):
    n = len(robust_correct)
    robust = sum(robust_correct) / n
    return {"model": model, "defense": defense, "epochs": epochs, "train_cpu_s": cpu_s,
            "train_wall_s": cpu_s / 2, "threads": 2, "load_before": [1.0], "load_after": [1.5],
            "best_epoch": epochs, "clean_acc": clean, "clean_ci": [clean - 0.05, clean + 0.05],
            "robust_acc": robust, "robust_ci": [max(robust - 0.1, 0), min(robust + 0.1, 1)],
            "robust_correct": list(robust_correct), "n_test": n, "preset": "fast"}


def pattern(k, n=100):
    """``k`` robust points out of ``n``: the first ``k``."""
    return [i < k for i in range(n)]


@pytest.fixture
def cells():
    return [make_cell("x1", "fgsm-rs", 2, 60.0, pattern(40)),
            make_cell("x2", "fgsm-rs", 2, 120.0, pattern(50)),
            make_cell("x1", "pgd-at", 2, 300.0, pattern(45)),   # slower and less robust than x2 fgsm-rs
            make_cell("x2", "pgd-at", 2, 600.0, pattern(70)),
            make_cell("resnet16", "pgd-at", 2, 900.0, pattern(65))]


def test_frontier_keeps_only_cells_no_other_beats(cells):
    front = frontier(cells)
    assert [(c["model"], c["defense"]) for c in front] == [("x1", "fgsm-rs"), ("x2", "fgsm-rs"), ("x2", "pgd-at")]
    tie = [make_cell("x1", "a", 1, 10.0, pattern(30)), make_cell("x2", "b", 1, 10.0, pattern(60))]
    assert [c["defense"] for c in frontier(tie)] == ["b"]


def test_paired_difference_on_known_outcomes():
    mean, lo, hi = paired_difference(pattern(50), pattern(40))  # 10 points gained, none lost
    assert mean == pytest.approx(0.10)
    # differences: 10 ones, 90 zeros; sample variance 0.09 * 100 / 99, standard error over sqrt(100)
    assert hi - mean == pytest.approx(mean - lo)
    assert hi - mean == pytest.approx(1.96 * (0.09 * 100 / 99 / 100) ** 0.5) and lo > 0
    assert paired_difference(pattern(40), pattern(40)) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_difference(pattern(3, 5), pattern(3, 6))


def test_capacity_differences_widest_minus_narrowest(cells):
    cells.append(make_cell("x4", "pgd-at", 2, 1200.0, pattern(44)))
    rows = {(r["defense"], r["epochs"]): r for r in capacity_differences(cells)}
    assert set(rows) == {("fgsm-rs", 2), ("pgd-at", 2)}
    fgsm, pgd = rows[("fgsm-rs", 2)], rows[("pgd-at", 2)]
    assert (fgsm["wide"], fgsm["narrow"]) == ("x2", "x1") and fgsm["difference"] == pytest.approx(0.10)
    assert (pgd["wide"], pgd["narrow"]) == ("x4", "x1")
    assert pgd["difference"] == pytest.approx(-0.01) and pgd["verdict"] == "undecided"
    assert pgd["cpu_ratio"] == pytest.approx(4.0) and pgd["n"] == 100


def test_verdict_needs_the_interval_to_decide(cells):
    rows = capacity_differences(cells)  # x2 - x1: +10 and +25 points
    assert [r["verdict"] for r in rows] == ["agrees", "agrees"]
    mean, lo, hi, n = _pooled(cells, rows)
    assert mean == pytest.approx(0.175) and n == 100 and lo > 0
    assert _verdict(lo, hi, rows) is True
    assert _verdict(-0.1, 0.2, rows) is None
    assert _verdict(-0.3, -0.1, rows) is None  # a pair that agrees blocks "disagrees"
    assert _verdict(-0.3, -0.1, [{"verdict": "disagrees"}]) is False


def test_table_findings_and_plot(cells, tmp_path):
    text = table(cells)
    assert text.count("| yes |") == 3 and "resnet16" in text
    lines = findings(cells)
    assert any(line.startswith("fgsm-rs 2 ep: robust x2 - x1 = +10.0 points") for line in lines)
    assert any(line.startswith("frontier x1 fgsm-rs 2 ep vs x2 pgd-at 2 ep:") for line in lines)
    # defenses are paired against the cheapest defense of the same model and budget
    assert any(line.startswith("x1 2 ep: robust pgd-at - fgsm-rs = +5.0 points") and
               line.endswith("CPU x5.0") for line in lines)
    assert not any(line.startswith("resnet16 2 ep: robust") for line in lines)  # one defense only
    assert plot(cells, tmp_path / "frontier.png").stat().st_size > 0
    budgets = {"fast (30 min x 2 cores)": 60.0, "best (120 min x 2 cores)": 240.0}
    assert plot(cells, tmp_path / "budgets.png", budgets=budgets).stat().st_size > 0


def test_budgets_are_compared_longest_minus_shortest(cells):
    longer = make_cell("x1", "fgsm-rs", 10, 240.0, pattern(49))
    lines = [x for x in findings([*cells, longer, make_cell("x1", "fgsm-rs", 5, 150.0, pattern(70))])
             if " ep - " in x]
    assert lines == ["x1 fgsm-rs: robust 10 ep - 2 ep = +9.0 points [+3.4, +14.6] (n 100, paired) "
                     "-> a difference; CPU x4.0"]


def _pgd_verdict(fast):
    ref = make_cell("x1", "pgd-at", 5, 400.0, pattern(60))
    [line] = [x for x in findings([ref, fast]) if x.startswith("frontier")]
    assert "vs x1 pgd-at 5 ep" in line and "n 100, paired" in line
    return line.rsplit("-> ", 1)[1].split()[0]


def test_the_pgd_at_target_is_tested_paired_and_on_time():
    assert _pgd_verdict(make_cell("x1", "n-fgsm", 5, 80.0, pattern(60))) == "PASS"      # 100 %, 20 % time
    assert _pgd_verdict(make_cell("x1", "n-fgsm", 5, 80.0, pattern(57))) == "undecided"  # 95 % inside the CI
    assert _pgd_verdict(make_cell("x1", "n-fgsm", 5, 80.0, pattern(45))) == "fail"       # 75 %
    assert _pgd_verdict(make_cell("x1", "n-fgsm", 5, 150.0, pattern(60))) == "fail"      # 38 % of the time
    mean, lo, hi = paired_difference(pattern(60), pattern(60), scale=0.95)
    assert mean == pytest.approx(0.03) and lo > 0


def test_cell_names_and_reuse(tmp_path):
    config = CapacityConfig(cache=tmp_path, preset="fast")
    assert cell_dir(config, "x1", "pgd-at", 5).name == "fashion-mnist-x1-pgd-at-5ep"
    tuned = CapacityConfig(cache=tmp_path, schedule="cyclic", ema_decay=0.999)
    assert cell_dir(tuned, "x4", "n-fgsm", 10).name == "fashion-mnist-x4-n-fgsm-10ep-cyclic-ema0.999"
    assert cell_dir(CapacityConfig(cache=tmp_path, lr=2e-3), "x1", "trades", 5).name == \
        "fashion-mnist-x1-trades-5ep-lr0.002"
    assert cell_dir(CapacityConfig(cache=tmp_path, lr=2e-3, eps_ramp=0.2), "x1", "n-fgsm", 5).name == \
        "fashion-mnist-x1-n-fgsm-5ep-lr0.002-ramp0.2"
    watched = CapacityConfig(cache=tmp_path, check_attack="apgd-ce")
    assert cell_dir(watched, "resnet16", "fgsm-rs", 5).name == "fashion-mnist-resnet16-fgsm-rs-5ep-watch-apgd-ce"
    assert defense_params(watched, "n-fgsm")["check_attack"] == "apgd-ce"
    assert "check_attack" not in defense_params(config, "n-fgsm")
    with pytest.raises(ValueError, match="trades has no catastrophic-overfitting watch"):
        defense_params(watched, "trades")
    folder = cell_dir(config, "x1", "fgsm-rs", 2)
    folder.mkdir()
    saved = make_cell("x1", "fgsm-rs", 2, 60.0, pattern(3, 4))
    (folder / "cell.json").write_text(json.dumps(saved))
    assert run_cell(config, "x1", "fgsm-rs", 2, ([0] * 4, [0] * 4)) == saved  # no training


def test_a_cell_says_which_machine_measured_it():
    info = machine()
    assert set(info) == {"cpu", "cpus", "torch", "date"}
    assert info["cpu"] and info["cpus"] >= 1 and info["torch"] == torch.__version__
    assert len(info["date"]) == 10 and json.loads(json.dumps(info)) == info


def test_saved_cells_are_the_study_so_far(tmp_path):
    config = CapacityConfig(cache=tmp_path, preset="standard")
    for key, defense, epochs, n, preset in [("x1", "fgsm-rs", 5, 4, "standard"), ("x2", "pgd-at", 2, 4, "standard"),
                                            ("x1", "trades", 5, 3, "standard"), ("x4", "n-fgsm", 5, 4, "fast")]:
        folder = cell_dir(config, key, defense, epochs)
        folder.mkdir()
        cell = make_cell(key, defense, epochs, 60.0, pattern(3, n))
        cell["preset"] = preset
        (folder / "cell.json").write_text(json.dumps(cell))
    (tmp_path / "digits-x1-fgsm-rs-3ep").mkdir()  # another dataset, no cell.json: ignored
    found = saved_cells(config, 4)
    assert [(c["model"], c["defense"]) for c in found] == [("x1", "fgsm-rs"), ("x2", "pgd-at")]


def test_cells_are_compared_only_within_their_training_options(cells):
    tuned = make_cell("x2", "fgsm-rs", 2, 130.0, pattern(20))
    tuned["lr"] = 2e-3
    ema = make_cell("x1", "fgsm-rs", 2, 61.0, pattern(47))
    ema["ema_decay"] = 0.999
    assert variant(cells[0]) == "" and variant(tuned) == "lr0.002" and variant(ema) == "ema0.999"
    assert variant({**tuned, "eps_ramp": 0.2}) == "lr0.002 ramp0.2"
    assert variant({**ema, "check_attack": "apgd-ce"}) == "ema0.999 watch-apgd-ce"
    assert variant({**ema, "check_attack": "pgd"}) == "ema0.999"
    cells += [tuned, ema]
    rows = capacity_differences(cells)
    fgsm = [r for r in rows if r["defense"] == "fgsm-rs"]
    assert [(r["variant"], r["difference"]) for r in fgsm] == [("", pytest.approx(0.10))]
    _pooled(cells, rows)  # every row finds its own cells
    lines = findings(cells)
    assert any(line.startswith("fgsm-rs 2 ep: robust x2 - x1 = +10.0 points") for line in lines)
    assert not any("x2 - x1 = -20.0" in line for line in lines)  # lr 2e-3 x2 never meets x1 at 1e-3
    assert any(line.startswith("x2 fgsm-rs 2 ep: robust (lr0.002) - defaults = -30.0 points") and
               "a difference" in line for line in lines)
    assert any(line.startswith("x1 fgsm-rs 2 ep: robust (ema0.999) - defaults = +7.0 points")
               for line in lines)
    assert "fgsm-rs (lr0.002)" in table(cells)


def test_step_cost_times_real_steps_and_projects_an_epoch(tmp_path):
    config = CapacityConfig(cache=tmp_path, dataset="digits", quick=True, n_train=640, lr=1e-2)
    cost = step_cost(config, "x1", "n-fgsm", steps=2, warmup=1)
    assert cost["model"] == "x1" and cost["defense"] == "n-fgsm" and cost["steps"] == 2
    assert cost["steps_per_epoch"] == 5  # 640 training points in batches of 128
    assert cost["wall_s_per_step"] > 0 and cost["cpu_s_per_step"] > 0
    assert cost["epoch_wall_min"] == pytest.approx(cost["wall_s_per_step"] * 5 / 60)
    assert cost["epoch_cpu_min"] == pytest.approx(cost["cpu_s_per_step"] * 5 / 60)
    assert set(cost["machine"]) == {"cpu", "cpus", "torch", "date"}
    assert not any(tmp_path.iterdir())  # a probe, never a cell
    with pytest.raises(ValueError, match="need 768 training points"):
        step_cost(config, "x1", "n-fgsm", steps=5, warmup=1)
    with pytest.raises(ValueError, match="steps"):
        step_cost(config, "x1", "n-fgsm", steps=0)
    with pytest.raises(ValueError, match="unknown capacity defense 'pgd'"):
        step_cost(config, "x1", "pgd", steps=1)
