"""Per-point random streams: every point's draws come from its own generator.

A :class:`PointStreams` holds one ``torch.Generator`` per point of a block, seeded from a base
seed and the point's *global* index (:func:`advlab.evaluation.sharding.batch_seed`, the seeding
the sharded evaluation uses, applied to point indices). A point's random draws (Lanczos starts
and restarts, Hutchinson probes, random lines and directions) are then the same whichever block,
rank or world size measures it, which makes :func:`advlab.geometry.compare` reproducible for any
number of processes.

The geometry draw helpers (:func:`~advlab.geometry._common.random_normal`,
:func:`~advlab.geometry._common.rademacher`) accept a :class:`PointStreams` wherever they accept a
generator: a draw of shape ``(B, ...)`` takes row ``i`` from stream ``i`` (``B`` must be the
number of streams).
"""

from __future__ import annotations

import torch
from torch import Tensor

from advlab.evaluation.sharding import batch_seed


class PointStreams:
    """One generator per point: point ``start + i`` seeded with ``batch_seed(seed, start + i)``.

    Args:
        seed: the base seed (e.g. ``generator.initial_seed()``).
        start: global index of the block's first point; count: points in the block.
        device: where the generators draw (the points' device).
    """

    def __init__(self, seed: int, start: int, count: int, device: torch.device | str = "cpu") -> None:
        if count < 1:
            raise ValueError(f"a block needs at least one point, got count={count}")
        self.seed, self.start, self.device = int(seed), int(start), torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(batch_seed(self.seed, start + i))
                           for i in range(count)]

    def __len__(self) -> int:
        return len(self.generators)

    def _rows(self, shape: tuple[int, ...], rows: Tensor | None) -> list[int]:
        if not shape or shape[0] != len(self):
            raise ValueError(f"a per-point draw needs shape (points={len(self)}, ...), got {shape}")
        if rows is None:
            return list(range(len(self)))
        return [int(i) for i in rows.nonzero().flatten().tolist()]

    def normal(self, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
               rows: Tensor | None = None) -> Tensor:
        """Standard normal ``shape`` ``(B, ...)``, row ``i`` from stream ``i``; with a boolean
        ``rows`` ``(B,)`` only those rows are drawn (the others stay 0 and no stream advances)."""
        out = torch.zeros(shape, dtype=dtype, device=self.device)
        for i in self._rows(shape, rows):
            out[i] = torch.randn(shape[1:], generator=self.generators[i], dtype=dtype, device=self.device)
        return out

    def bits(self, shape: tuple[int, ...]) -> Tensor:
        """Independent 0/1 integers ``shape`` ``(B, ...)``, row ``i`` from stream ``i``."""
        return torch.stack([torch.randint(0, 2, shape[1:], generator=self.generators[i], device=self.device)
                            for i in self._rows(shape, None)])
