"""Process-group plumbing shared by training and evaluation (no advlab imports above this one).

A :class:`DistContext` says where this process stands in a torch.distributed job; a single
process is the same code with ``world_size == 1``, where every collective is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when advlab created the process group and must destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_context() -> DistContext:
    """The context of an already initialised process group, else a single process."""
    if not dist.is_available() or not dist.is_initialized():
        return DistContext()
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def broadcast_object(obj: Any, context: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not context.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


T = TypeVar("T")


@dataclass(frozen=True)
class _Failure:
    message: str


def on_main(fn: Callable[[], T], context: DistContext, what: str) -> T:
    """``fn()`` run on rank 0 and broadcast to every rank. If it raises under a process group,
    every rank raises (``RuntimeError`` naming ``what``) instead of waiting in the broadcast; in
    one process the error propagates unchanged."""
    result: Any = None
    if context.is_main:
        try:
            result = fn()
        except Exception as err:
            if not context.enabled:
                raise
            result = _Failure(f"{what} failed on rank 0: {err!r}")
    result = broadcast_object(result, context)
    if isinstance(result, _Failure):
        raise RuntimeError(result.message)
    return result


def gather_objects(obj: Any, context: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: DistContext) -> None:
    """Wait for every rank (a no-op on one process)."""
    if context.enabled:
        dist.barrier()
