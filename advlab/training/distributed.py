"""Data-parallel plumbing for :func:`advlab.training.fit` under ``torchrun``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
when ``WORLD_SIZE > 1`` (or a process group already exists) training is data-parallel:
the process group is created here if needed (gloo on CPU, nccl on CUDA, one GPU per
``LOCAL_RANK``), the model is wrapped in ``DistributedDataParallel`` and metrics are summed
across ranks. A single process is the same code with ``world_size == 1``.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.distributed as dist
from torch import nn

from advlab._dist import DistContext, broadcast_object, gather_objects
from advlab._utils import resolve_device

__all__ = ["DistContext", "all_reduce_sum", "broadcast_object", "gather_objects",
           "setup_distributed", "teardown_distributed", "wrap_model"]
logger = logging.getLogger(__name__)


def setup_distributed(device: str | torch.device | None) -> tuple[DistContext, torch.device]:
    """Join the torchrun job if there is one; return the context and this rank's device."""
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or (env_world <= 1 and not dist.is_initialized()):
        return DistContext(), resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    owns_group = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns_group = True
    context = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                          local_rank=local_rank, owns_group=owns_group)
    if context.is_main:
        logger.info("data-parallel training on %d processes (%s)", context.world_size,
                    dist.get_backend())
    return context, resolved


def teardown_distributed(context: DistContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if context.owns_group and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when data-parallel, else ``model``. DDP broadcasts
    rank 0's parameters and buffers, so every rank starts from the same weights."""
    if not context.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # Conv weights with one input channel have two valid stride layouts; DDP warns about it
    # once per process although it is harmless.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place; a no-op on one process)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
