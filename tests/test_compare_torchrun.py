"""``geometry.compare`` and ``advlab geometry --compare`` under torchrun (2 processes, gloo, CPU).

The points are measured in whole blocks shared round-robin by the ranks, every point's random
draws come from its own stream (seeded from the seed and the point's index), and rank 0 gathers,
computes the rows and broadcasts them: the per-point values and the rows are bit-identical to one
process at the same block size. Two digits MLPs, 20 points and cheap settings keep each torchrun
run to seconds; the Hutchinson threshold is lowered so that its probes are drawn too.
"""

from __future__ import annotations

import json

import pytest
import torch
from harness import run_torchrun, trained_mlp

import advlab.geometry.compare_measures as compare_measures
from advlab.data import load_dataset
from advlab.geometry import compare
from advlab.geometry.lanczos import lanczos
from advlab.models import load_model, save_model
from advlab.store import Store
from advlab.streams import PointStreams

LABELS = ("standard", "smooth")
OPTIONS = dict(labels=LABELS, steps=4, hutchinson_samples=3, resolution=9, directions=3,
               resamples=100, batch_size=6)
POINTS = 20
SCRIPT = f"""
import os, sys, torch
import torch.distributed as dist
import advlab.geometry.compare_measures as compare_measures
from advlab.data import load_dataset
from advlab.geometry import compare
from advlab.models import load_model

torch.set_num_threads(1)
compare_measures.EXACT_FROBENIUS_DIM = 16  # Hutchinson probes on digits (d = 64)
root = sys.argv[1]
a, b = load_model(root + "/standard"), load_model(root + "/smooth")
data = load_dataset("digits", "test")
dist.init_process_group("gloo")
result = compare(a, b, data.x[:{POINTS}], data.y[:{POINTS}], generator=torch.Generator().manual_seed(7),
                 **{OPTIONS!r})
torch.save(result, f"{{root}}/ddp-{{dist.get_rank()}}.pt")
dist.barrier()
dist.destroy_process_group()
os._exit(0)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare_runs")
    save_model(trained_mlp("digits", (32,), 60, 0.0, 0), root / "standard", dataset="digits")
    save_model(trained_mlp("digits", (32,), 30, 1e-2, 1), root / "smooth", dataset="digits")
    return root


def _single(runs, **more):
    data = load_dataset("digits", "test")
    a, b = load_model(runs / "standard"), load_model(runs / "smooth")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compare(a, b, data.x[:POINTS], data.y[:POINTS], generator=torch.Generator().manual_seed(7),
                       **{**OPTIONS, **more})
    finally:
        torch.set_num_threads(threads)


def _same_values(first: dict, second: dict) -> None:
    assert set(first) == set(second)
    for label in first:
        assert set(first[label]) == set(second[label])
        for key, value in first[label].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, second[label][key], rtol=0, atol=0, equal_nan=True,
                                           msg=f"{label} {key}")


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_bit_for_bit(runs, monkeypatch):
    (runs / "script.py").write_text(SCRIPT)
    run_torchrun(str(runs / "script.py"), str(runs), cwd=runs)
    ddp = [torch.load(runs / f"ddp-{rank}.pt", weights_only=False) for rank in (0, 1)]
    monkeypatch.setattr(compare_measures, "EXACT_FROBENIUS_DIM", 16)
    single = _single(runs)
    assert single.rows["hessian_frobenius"]["method"] == "hutchinson (3 probes)"
    for result in ddp:  # every rank returns rank 0's comparison
        assert result.points == POINTS and result.both_correct == single.both_correct
        _same_values(result.per_point, single.per_point)
        assert json.dumps(result.to_dict()["rows"]) == json.dumps(single.to_dict()["rows"])
        assert result.params == single.params and result.params["batch_size"] == 6
    assert set(single.rows) >= {"top_eigenvalue", "boundary_curvature", "noise_ratio",
                                "adversarial_vs_random_curvature"}


def test_a_points_draws_do_not_depend_on_its_block():
    """Point 5's stream is the same whether it is the second of a block starting at 4 or alone."""
    block = PointStreams(3, 4, 3).normal((3, 7))
    alone = PointStreams(3, 5, 1).normal((1, 7))
    assert torch.equal(block[1], alone[0]) and not torch.equal(block[0], block[1])
    bits = PointStreams(3, 4, 2).bits((2, 5))
    assert set(bits.unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="per-point draw"):
        PointStreams(3, 0, 2).normal((3, 7))


def test_lanczos_restarts_only_the_operators_that_need_one():
    """A rank-1 operator exhausts its Krylov space at once and restarts; a full-rank one never
    does, so its stream gives it the same start (and result) as alone."""
    dim = 6
    full = torch.diag(torch.arange(1.0, dim + 1, dtype=torch.float64))
    low = torch.zeros(dim, dim, dtype=torch.float64)
    low[0, 0] = 5.0

    def operator(matrices):
        return lambda v: torch.einsum("bij,bj->bi", matrices, v)

    values, _ = lanczos(operator(torch.stack([low, full])), dim, 2, dim, batch_size=2, which="LA",
                        generator=PointStreams(0, 0, 2))
    torch.testing.assert_close(values[0], torch.tensor([5.0, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(values[1], torch.tensor([6.0, 5.0], dtype=torch.float64), atol=1e-9, rtol=0)
    alone, _ = lanczos(operator(full[None]), dim, 2, dim, batch_size=1, which="LA",
                       generator=PointStreams(0, 1, 1))  # point 1's stream
    torch.testing.assert_close(alone[0], values[1], atol=1e-9, rtol=0)


def test_block_size_changes_only_rounding(runs):
    """The draws are per point, so another block size gives the same values up to rounding
    (different shapes: no bit-equality asserted)."""
    six, twenty = _single(runs, quantities=("minimal_l2", "top_eigenvalue", "hessian_frobenius")), \
        _single(runs, quantities=("minimal_l2", "top_eigenvalue", "hessian_frobenius"), batch_size=20)
    for label in LABELS:
        for key in ("minimal_l2", "top_eigenvalue", "hessian_frobenius"):
            torch.testing.assert_close(six.per_point[label][key], twenty.per_point[label][key],
                                       rtol=1e-5, atol=1e-8, equal_nan=True)


def test_without_a_generator_one_process_measures_all_points_at_once(runs):
    data = load_dataset("digits", "test")
    a, b = load_model(runs / "standard"), load_model(runs / "smooth")
    kwargs = {**OPTIONS, "quantities": ("minimal_l2", "top_eigenvalue")}
    results = []
    for _ in range(2):
        torch.manual_seed(11)
        results.append(compare(a, b, data.x[:POINTS], data.y[:POINTS], **kwargs))
    assert results[0].params["batch_size"] == POINTS  # one block: the draws of before
    _same_values(results[0].per_point, results[1].per_point)
    with pytest.raises(ValueError, match="batch_size"):
        compare(a, b, data.x[:POINTS], data.y[:POINTS], **{**kwargs, "batch_size": 0})


CLI = ["geometry", "standard", "--compare", "smooth", "--points", "2", "--eigs", "3", "--directions", "3",
       "--compare-points", "12", "--compare-batch-size", "4", "--no-progress"]


@pytest.mark.timeout(300)
def test_cli_compare_under_torchrun_matches_one_process(runs):
    """The command's comparison under torchrun equals the one it runs in one process (the figure
    analysis runs on rank 0 alone, as in one process, and is not compared here)."""
    from advlab.cli._runs import load_run
    from advlab.cli.geometry import _paired_comparison

    stdout = run_torchrun("-m", "advlab", *CLI, "--out", "ddp", cwd=runs)
    assert stdout.count("figures and summary.json") == 1  # rank 0 alone prints and writes
    ddp = json.loads((runs / "ddp" / "summary.json").read_text())
    assert ddp["params"]["comparison"]["points"] == 12 and ddp["params"]["comparison"]["batch_size"] == 4
    assert ddp["metadata"]["world_size"] == 2
    contexts = [load_run(str(runs / name), device="cpu") for name in LABELS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _paired_comparison(contexts[0], {ctx.name: ctx.model for ctx in contexts}, seed=0, n=12, h=0.5,
                                 clip=True, directions=10, batch_size=4)
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(json.dumps(one.to_dict()["rows"]))
    assert rows and {name: ddp["comparison"][name] for name in rows} == rows
    with Store(runs / "advlab.db") as store:  # one geometry row: rank 0 alone wrote it
        assert len(store.get_evaluations("standard", kind="geometry")) == 1
