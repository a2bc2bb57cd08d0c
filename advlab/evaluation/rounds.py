"""Whole global batches dealt round-robin over the ranks of a process group, one round at a time.

In each round every rank evaluates at most one batch. After every :func:`commit_rounds` rounds
(1 in one process; 4 under a process group, so that the ranks wait for each other -- a batch's
time varies with how many of its points the attacks still work on -- once per 4 batches rather
than after each) the per-sample records are gathered (``all_gather_object``) and rank 0 commits
them (checkpoint sidecar, progress). Which rank takes which batch depends only on the list of
batches not yet done, never on timing.

How a rank gets its batches depends on the data (:mod:`advlab.evaluation.streaming`):

* read by index (tensors, a map-style ``Dataset``, a ``DataLoader`` reading one in order): a rank
  reads (indexes and collates) only the batches it evaluates. Global batch 0, which every rank
  needs for the setup, is read by rank 0 and broadcast (tensors in memory are sliced everywhere).
  On a resume, rank 0 also re-reads the finished batches to check their points.
* a stream (an ``IterableDataset``, a custom or shuffling sampler): every rank iterates the whole
  stream and keeps only its own batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from advlab._dist import DistContext, gather_objects, on_main
from advlab.evaluation.ensemble import Progress
from advlab.evaluation.resume import Checkpoint
from advlab.evaluation.streaming import Batch, Indexed, indexed_batches, iter_batches, shuffled

Record = dict[str, Any]


def first_batch(data: Any, y: Any, *, batch_size: int, n: int | None,
                context: DistContext) -> tuple[Indexed | Iterator[Batch], Batch]:
    """The batch source (indexed, or a stream that has yielded batch 0) and global batch 0 on
    every rank."""
    if context.enabled and shuffled(data):
        raise ValueError("a DataLoader with shuffle=True gives every rank another order: pass "
                         "shuffle=False (the evaluation's order is the data's)")
    indexed = indexed_batches(data, y, batch_size=batch_size, n=n)
    if indexed is None:
        stream = iter_batches(data, y, batch_size=batch_size, n=n)
        first = next(stream, None)
        if first is None:
            raise ValueError("evaluate got empty data")
        return stream, first
    if indexed.count == 0:
        raise ValueError("evaluate got empty data")
    if indexed.shared:
        return indexed, next(indexed.read([0]))
    return indexed, on_main(lambda: next(indexed.read([0])), context, "reading batch 0")


def commit_rounds(context: DistContext) -> int:
    """Rounds between two gathers: every round in one process (nothing to wait for, and a resume
    loses no batch), every 4 rounds under a process group."""
    return 4 if context.enabled else 1


def _commit(mine: list[Record], context: DistContext, checkpoint: Checkpoint | None,
            records: dict[int, Record], progress: Progress | None) -> None:
    """Gather the records of the last rounds from every rank; rank 0 commits them."""
    gathered = [r for part in gather_objects(mine, context) for r in part]
    errors = [r["error"] for r in gathered if "error" in r]
    if errors:
        raise RuntimeError("the evaluation failed on another rank: " + "; ".join(errors))
    if context.is_main:
        if checkpoint is not None:
            checkpoint.append(gathered)
        records.update((r["batch"], r) for r in gathered)
        if progress is not None:
            progress("points", sum(len(r["correct"]) for r in gathered))


def _guarded(evaluate_one: Callable[[Batch], Record], raw: Batch, context: DistContext,
             mine: list[Record]) -> None:
    """Append this rank's record of one batch to ``mine``; under a process group an error becomes
    a record (no rank hangs) and the rank evaluates nothing more until the next gather."""
    if any("error" in r for r in mine):
        return
    mine.append(_evaluated(evaluate_one, raw, context))


def _evaluated(evaluate_one: Callable[[Batch], Record], raw: Batch, context: DistContext) -> Record:
    try:
        return evaluate_one(raw)
    except Exception as err:
        if not context.enabled:
            raise
        return {"error": f"batch {raw.index} on rank {context.rank}: {err}"}


def _reading(source: Indexed, indices: list[int], first: Batch) -> Iterator[Batch]:
    """``source.read(indices)``, with global batch 0 taken from ``first`` (already read)."""
    if indices and indices[0] == first.index:
        return chain([first], source.read(indices[1:]))
    return source.read(indices)


def run_rounds(source: Indexed | Iterator[Batch], first: Batch, *, context: DistContext,
               done: set[int], checkpoint: Checkpoint | None, records: dict[int, Record],
               progress: Progress | None, evaluate_one: Callable[[Batch], Record],
               check_one: Callable[[Batch], None]) -> None:
    """Evaluate the batches not in ``done`` with ``evaluate_one`` (whole batches round-robin);
    rank 0 (the one holding ``checkpoint``) checks each finished batch with ``check_one``."""
    def check(raw: Batch) -> None:
        check_one(raw)
        if progress is not None:
            progress("resumed", len(raw.x))

    every = commit_rounds(context)

    if isinstance(source, Indexed):
        if checkpoint is not None:
            for raw in _reading(source, sorted(b for b in done if b < source.count), first):
                check(raw)
        pending = [b for b in range(source.count) if b not in done]
        mine_ids = pending[context.rank::context.world_size]
        reader = _reading(source, mine_ids, first)
        rounds, mine = -(-len(pending) // context.world_size), []
        for round_ in range(rounds):
            if round_ < len(mine_ids):
                _guarded(evaluate_one, next(reader), context, mine)
            if (round_ + 1) % every == 0 or round_ == rounds - 1:
                _commit(mine, context, checkpoint, records, progress)
                mine = []
        return
    mine, position, span = [], 0, every * context.world_size
    for raw in chain([first], source):
        if raw.index in done:
            if checkpoint is not None:
                check(raw)
            continue
        if position % context.world_size == context.rank:
            _guarded(evaluate_one, raw, context, mine)
        position += 1
        if position % span == 0:
            _commit(mine, context, checkpoint, records, progress)
            mine = []
    if position % span:
        _commit(mine, context, checkpoint, records, progress)
