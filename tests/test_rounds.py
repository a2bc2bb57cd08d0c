"""The round-robin of whole batches (advlab.evaluation.rounds): gathers every few rounds under a
process group, and an error on one rank stops that rank and reaches every rank at the gather.
The other rank is simulated by a stand-in for ``gather_objects``."""

from __future__ import annotations

import pytest
import torch

from advlab._dist import DistContext
from advlab.evaluation import rounds
from advlab.evaluation.rounds import commit_rounds, first_batch, run_rounds


def _run(monkeypatch, fail_at: int | None = None):
    context = DistContext(rank=0, world_size=2)
    gathers, evaluated = [], []

    def gather(mine, ctx):  # rank 1 holds the odd batches and reports them in the same shape
        gathers.append([r.get("batch", "error") for r in mine])
        return [mine, [{"batch": r["batch"] + 1, "correct": r["correct"]} for r in mine if "batch" in r]]

    monkeypatch.setattr(rounds, "gather_objects", gather)
    x, y = torch.rand(20, 3), torch.zeros(20, dtype=torch.long)
    source, first = first_batch(x, y, batch_size=2, n=None, context=context)  # 10 batches

    def evaluate_one(batch):
        evaluated.append(batch.index)
        if batch.index == fail_at:
            raise ValueError("boom")
        return {"batch": batch.index, "correct": [True] * len(batch.x)}

    records: dict = {}
    ticks: list = []
    run_rounds(source, first, context=context, done=set(), checkpoint=None, records=records,
               progress=lambda name, k: ticks.append(k), evaluate_one=evaluate_one,
               check_one=lambda raw: None)
    return records, gathers, evaluated, ticks


def test_gathers_every_four_rounds_under_a_process_group(monkeypatch):
    assert commit_rounds(DistContext()) == 1 and commit_rounds(DistContext(world_size=2)) == 4
    records, gathers, evaluated, ticks = _run(monkeypatch)
    assert evaluated == [0, 2, 4, 6, 8]  # rank 0's batches, 5 rounds
    assert gathers == [[0, 2, 4, 6], [8]]  # after round 4 and after the last round
    assert sorted(records) == list(range(10)) and ticks == [16, 4]


def test_an_error_stops_the_rank_and_is_raised_at_the_gather(monkeypatch):
    with pytest.raises(RuntimeError, match="failed on another rank.*batch 2 on rank 0: boom"):
        _run(monkeypatch, fail_at=2)


def test_an_error_skips_the_rest_of_the_span(monkeypatch):
    evaluated: list = []
    original = rounds._evaluated

    def spy(evaluate_one, raw, context):
        evaluated.append(raw.index)
        return original(evaluate_one, raw, context)

    monkeypatch.setattr(rounds, "_evaluated", spy)
    with pytest.raises(RuntimeError):
        _run(monkeypatch, fail_at=2)
    assert evaluated == [0, 2]  # batches 4 and 6 of the same span were not evaluated
