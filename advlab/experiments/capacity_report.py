"""The capacity study's table, findings and frontier plot (cells of :mod:`advlab.experiments.capacity`).

Every accuracy is printed with n and its 95 % Clopper-Pearson interval; a paired difference is
called a difference only when its 95 % interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

from advlab.experiments.capacity import (
    Cell,
    cell_key,
    difference_text,
    frontier,
    paired_difference,
    variant,
    width_keys,
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _label(cell: Cell) -> str:
    """``defense`` or ``defense (options)`` for a cell trained with non-default options."""
    options = variant(cell)
    return f"{cell['defense']} ({options})" if options else cell["defense"]


def table(cells: list[Cell]) -> str:
    """A Markdown table: one row per cell, frontier cells marked."""
    on = {id(c) for c in frontier(cells)}
    lines = ["| model | defense | epochs (best) | clean % [95 % CI] | robust % [95 % CI] | n | "
             "CPU-min | wall min | threads | load | frontier |", "|" + "---|" * 11]
    for c in sorted(cells, key=lambda c: (c["defense"], c["model"], c["epochs"], variant(c))):
        lo, hi = c["clean_ci"]
        rlo, rhi = c["robust_ci"]
        lines.append(f"| {c['model']} | {_label(c)} | {c['epochs']} ({c['best_epoch']}) | "
                     f"{_pct(c['clean_acc'])} [{_pct(lo)}, {_pct(hi)}] | {_pct(c['robust_acc'])} "
                     f"[{_pct(rlo)}, {_pct(rhi)}] | {c['n_test']} | {c['train_cpu_s'] / 60:.2f} | "
                     f"{c['train_wall_s'] / 60:.2f} | {c['threads']} | {c['load_before'][0]:.1f}"
                     f"-{c['load_after'][0]:.1f} | {'yes' if id(c) in on else ''} |")
    return "\n".join(lines)


def _paired_line(label: str, a: Cell, b: Cell) -> str:
    """``label: robust a - b = ... [lo, hi] (n, paired) -> verdict; CPU xR`` (points, 95 %)."""
    return (f"{label} = {difference_text(a['robust_correct'], b['robust_correct'])}; "
            f"CPU x{a['train_cpu_s'] / max(b['train_cpu_s'], 1e-9):.1f}")


def _width_findings(cells: list[Cell]) -> list[str]:
    """Every wider ``small_cnn`` and every zoo model (``resnet16``) against the narrowest
    ``small_cnn``, paired, per defense, budget and variant (cells trained with other options
    are never paired across options)."""
    out, index = [], {cell_key(c): c for c in cells}
    keys = width_keys(cells)
    for (model, defense, epochs, options), wide in sorted(index.items()):
        narrow = index.get((keys[0], defense, epochs, options)) if keys else None
        if narrow is None or model == keys[0]:
            continue
        where = f"{defense} {epochs} ep" + (f" ({options})" if options else "")
        out.append(_paired_line(f"{where}: robust {model} - {keys[0]}", wide, narrow))
    return out


def _grouped_without(cells: list[Cell], position: int) -> list[tuple[tuple, list[Cell]]]:
    """The cells grouped by their :func:`cell_key` without the part at ``position`` (1: the
    defense, 2: the budget), sorted by that reduced key."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        key = cell_key(cell)
        groups.setdefault(key[:position] + key[position + 1:], []).append(cell)
    return sorted(groups.items())


def _defense_findings(cells: list[Cell]) -> list[str]:
    """Every defense against the cheapest defense of the same model, budget and variant, paired
    (does the costlier method buy robustness at this width?)."""
    out = []
    for (model, epochs, options), group in _grouped_without(cells, 1):
        cheapest = min(group, key=lambda c: c["train_cpu_s"])
        where = f"{model} {epochs} ep" + (f" ({options})" if options else "")
        out += [_paired_line(f"{where}: robust {c['defense']} - {cheapest['defense']}", c, cheapest)
                for c in sorted(group, key=lambda c: c["train_cpu_s"]) if c is not cheapest]
    return out


def _option_findings(cells: list[Cell]) -> list[str]:
    """Every cell trained with non-default options against the same cell at the defaults
    (learning rate, schedule, EMA: the options kept only if they help)."""
    index = {cell_key(c): c for c in cells}
    out = []
    for (model, defense, epochs, options), cell in sorted(index.items()):
        default = index.get((model, defense, epochs, ""))
        if options and default is not None:
            out.append(_paired_line(f"{model} {defense} {epochs} ep: robust ({options}) - defaults",
                                    cell, default))
    return out


def _budget_findings(cells: list[Cell]) -> list[str]:
    """The longest budget against the shortest of every model, defense and variant trained at
    two budgets or more, paired (does more training time buy robustness?)."""
    out = []
    for (model, defense, options), group in _grouped_without(cells, 2):
        if len(group) < 2:
            continue
        short, long = min(group, key=lambda c: c["epochs"]), max(group, key=lambda c: c["epochs"])
        where = f"{model} {defense}" + (f" ({options})" if options else "")
        out.append(_paired_line(f"{where}: robust {long['epochs']} ep - {short['epochs']} ep", long, short))
    return out


def _pgd_findings(cells: list[Cell], share: float = 0.95, budget: float = 0.25) -> list[str]:
    """The target "the fastest method on the frontier reaches >= ``share`` of PGD-AT's robust
    accuracy in <= ``budget`` of its CPU time", for every frontier cell cheaper than the most
    robust ``pgd-at`` cell (the reference, named in each line).

    The share is tested paired on the same test points (``robust - share * reference``): PASS
    when its 95 % interval lies above 0 and the time fits, fail when it lies below 0 or the time
    does not fit, otherwise undecided.
    """
    pgd = [c for c in cells if c["defense"] == "pgd-at"]
    if not pgd:
        return []
    ref = max(pgd, key=lambda c: (c["robust_acc"], -c["train_cpu_s"]))
    name = f"{ref['model']} pgd-at {ref['epochs']} ep"
    out = []
    for cell in frontier(cells):
        speed = cell["train_cpu_s"] / max(ref["train_cpu_s"], 1e-9)
        if cell["defense"] == "pgd-at" or speed >= 1:
            continue
        mean, lo, hi = paired_difference(cell["robust_correct"], ref["robust_correct"], scale=share)
        if speed > budget or hi < 0:
            verdict = "fail"
        else:
            verdict = "PASS" if lo > 0 else "undecided"
        out.append(f"frontier {cell['model']} {_label(cell)} {cell['epochs']} ep vs {name}: "
                   f"{cell['robust_acc'] / max(ref['robust_acc'], 1e-9):.1%} of its robust accuracy "
                   f"(robust - {share:.0%} x reference = {100 * mean:+.1f} points [{100 * lo:+.1f}, "
                   f"{100 * hi:+.1f}], n {cell['n_test']}, paired) in {speed:.0%} of its CPU time -> "
                   f"{verdict} (target >= {share:.0%} in <= {budget:.0%})")
    return out


def findings(cells: list[Cell]) -> list[str]:
    """Capacity, defense, budget and option differences (paired) and the "95 % of PGD-AT in 1/4
    of its time" check."""
    return (_width_findings(cells) + _defense_findings(cells) + _budget_findings(cells)
            + _option_findings(cells) + _pgd_findings(cells))


def plot(cells: list[Cell], path: str | Path, budgets: dict[str, float] | None = None) -> Path:
    """Robust accuracy (95 % CI bars) against training CPU-minutes, the frontier as a step line;
    ``budgets`` (label -> CPU-minutes, e.g. a recipe's budget) are drawn as dotted vertical lines."""
    from advlab.report.plotting import new_figure, save_figure

    figure, axis = new_figure(width=7, height=4.5)
    markers = dict(zip(sorted({c["model"] for c in cells}), "osD^v<>", strict=False))
    names = sorted({c["defense"] for c in cells})
    for number, defense in enumerate(names):
        for c in (c for c in cells if c["defense"] == defense):
            lo, hi = c["robust_ci"]
            axis.errorbar(c["train_cpu_s"] / 60, 100 * c["robust_acc"],
                          yerr=[[100 * (c["robust_acc"] - lo)], [100 * (hi - c["robust_acc"])]],
                          marker=markers[c["model"]], color=f"C{number}", linestyle="none", capsize=2)
        axis.plot([], [], color=f"C{number}", marker="o", linestyle="none", label=defense)
    front = frontier(cells)
    axis.step([c["train_cpu_s"] / 60 for c in front], [100 * c["robust_acc"] for c in front],
              where="post", color="black", linewidth=1, marker="o", markersize=10,
              markerfacecolor="none", label="frontier")
    for model, marker in markers.items():
        axis.plot([], [], color="gray", marker=marker, linestyle="none", label=model)
    for number, (label, minutes) in enumerate(sorted((budgets or {}).items(), key=lambda kv: kv[1])):
        axis.axvline(minutes, color="gray", linestyle=":", linewidth=1)
        axis.annotate(label, (minutes, 0.02 + 0.06 * number), xycoords=("data", "axes fraction"),
                      rotation=90, fontsize=7, color="gray", ha="right", va="bottom")
    axis.set_xscale("log")
    axis.set_xlabel("training CPU-minutes (busy machine)")
    axis.set_ylabel(f"robust accuracy % ({cells[0]['preset']}, n = {cells[0]['n_test']})")
    axis.legend(fontsize=7, ncol=2)
    return save_figure(figure, path)
