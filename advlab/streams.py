"""Random draws per point: counter-based streams keyed by a seed and each point's global index.

An attack draws its randomness (random starts, noise, Square's windows and signs) through the
functions of this module, from ``generator``: a ``torch.Generator`` (or ``None``, the global
generator) draws exactly as ``torch.rand``/``torch.randn``/``torch.randint`` do, while
:class:`PointStreams` draws row ``i`` of every ``(B, ...)`` tensor from point ``i``'s own stream.
A point's stream depends only on the seed and the point's global index, and advances only when
that point draws, so a point receives the same random numbers whichever batch, rank or world
size attacks it: with streams, an attack's per-sample randomness is independent of the batch.

The streams are counter based (in the spirit of Salmon et al. 2011, "Parallel random numbers: as
easy as 1, 2, 3"): the ``j``-th word of draw ``c`` of point ``p`` is the SplitMix64 finaliser
(Steele et al. 2014) of ``key_p + mix(c) + (j + 1) * golden``, computed with vectorised int64
tensor arithmetic (wrapping), so a draw for a whole batch costs a handful of tensor operations on
the batch's device. Uniforms take the top mantissa bits of a word, normals are Box-Muller, and
integers below ``high`` are a word modulo ``high``.

    streams = PointStreams(seed=0, start=1000, count=64)       # points 1000 .. 1063
    x_adv = apgd(model, x, y, threat, generator=streams)
    sub = for_rows(streams, index)                              # the streams of rows ``index``
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (64-bit unsigned arithmetic)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 words (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def point_key(seed: int, index: int) -> int:
    """The int64 key of point ``index``'s stream under ``seed`` (what :class:`PointStreams` uses)."""
    return _signed(_mix_int(_mix_int(seed) + _mix_int(index + 1) * 3 + _GOLDEN))


class PointStreams:
    """One random stream per point of a block: point ``start + i`` is row ``i``.

    Args:
        seed: the base seed; start: the global index of the block's first point; count: its
            number of points; device: where the draws are made (the points' device).

    A view (:meth:`rows`, :func:`for_rows`) shares the counters of the block it comes from, so
    drawing for some rows advances exactly those rows' streams.
    """

    def __init__(self, seed: int, start: int, count: int, device: torch.device | str = "cpu") -> None:
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.seed, self.start, self.device = int(seed), int(start), torch.device(device)
        keys = [point_key(self.seed, self.start + i) for i in range(count)]
        self._keys = torch.tensor(keys, dtype=torch.int64, device=self.device)
        self._counters = torch.zeros(count, dtype=torch.int64, device=self.device)
        self._index: Tensor | None = None  # rows of the block this view draws for (None: all)

    def __len__(self) -> int:
        return len(self._keys) if self._index is None else len(self._index)

    def __repr__(self) -> str:
        return f"PointStreams(seed={self.seed}, start={self.start}, rows={len(self)})"

    def rows(self, index: Tensor) -> PointStreams:
        """The streams of rows ``index`` (int ``(A,)`` or bool ``(B,)``): a view sharing counters."""
        index = index.nonzero().flatten() if index.dtype == torch.bool else index.long()
        index = index.to(self.device)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(f"rows {index.tolist()[:8]}... out of range for {len(self)} streams")
        view = object.__new__(PointStreams)
        view.seed, view.start, view.device = self.seed, self.start, self.device
        view._keys, view._counters = self._keys, self._counters
        view._index = index if self._index is None else self._index[index]
        return view

    def initial_seed(self) -> int:
        """A seed for batch-level draws made from these streams (see :func:`batch_generator`)."""
        first = self.start if self._index is None or not len(self._index) else self.start + int(self._index[0])
        return point_key(self.seed, first) & (2**63 - 1)

    def words(self, tail: tuple[int, ...]) -> Tensor:
        """Random int64 words ``(B, *tail)``, row ``i`` from stream ``i``; advances each row by one draw."""
        keys, counters = (self._keys, self._counters) if self._index is None else (
            self._keys[self._index], self._counters[self._index])
        m = math.prod(tail)
        base = keys + _mix(counters * _signed(_GOLDEN) + _signed(_M2))  # (B,)
        position = torch.arange(1, m + 1, dtype=torch.int64, device=self.device) * _signed(_GOLDEN)
        out = _mix(base[:, None] + position[None, :])
        if self._index is None:
            self._counters += 1
        else:
            self._counters[self._index] += 1
        return out.reshape(len(keys), *tail)

    def rand(self, tail: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform ``[0, 1)`` ``(B, *tail)`` in ``dtype`` (the top mantissa bits of each word)."""
        bits = 1 - round(math.log2(torch.finfo(dtype).eps))  # mantissa bits: 24 for float32
        return _shr(self.words(tail), 64 - bits).to(dtype) * 2.0 ** -bits

    def randn(self, tail: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal ``(B, *tail)`` in ``dtype`` (Box-Muller on two uniforms per value)."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        pair = self.rand((*tail, 2), work)
        radius = torch.sqrt(-2.0 * torch.log1p(-pair[..., 0]))  # 1 - u lies in (0, 1]
        return (radius * torch.cos(2 * math.pi * pair[..., 1])).to(dtype)

    def randint(self, high: int, tail: tuple[int, ...]) -> Tensor:
        """Integers uniform in ``[0, high)`` ``(B, *tail)`` (int64)."""
        if high < 1:
            raise ValueError(f"high must be >= 1, got {high}")
        return _shr(self.words(tail), 1) % high

    # the draw helpers of the geometry (``random_normal`` / ``rademacher``) use these two
    def normal(self, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
               rows: Tensor | None = None) -> Tensor:
        """Standard normal ``shape`` ``(B, ...)``; with a boolean ``rows`` ``(B,)`` only those
        rows are drawn (the others stay 0 and their streams do not advance)."""
        self._check(shape)
        if rows is None:
            return self.randn(tuple(shape[1:]), dtype)
        out = torch.zeros(shape, dtype=dtype, device=self.device)
        if bool(rows.any()):
            out[rows] = self.rows(rows).randn(tuple(shape[1:]), dtype)
        return out

    def bits(self, shape: tuple[int, ...]) -> Tensor:
        """Independent 0/1 integers ``shape`` ``(B, ...)``."""
        self._check(shape)
        return self.randint(2, tuple(shape[1:]))

    def _check(self, shape: tuple[int, ...]) -> None:
        if not shape or shape[0] != len(self):
            raise ValueError(f"a per-point draw needs shape (points={len(self)}, ...), got {tuple(shape)}")


Randomness = torch.Generator | PointStreams | None


def for_rows(generator: Randomness, index: Tensor) -> Randomness:
    """The randomness for rows ``index`` of a batch: a view for :class:`PointStreams`, else
    ``generator`` itself (a ``torch.Generator`` draws a sub-batch from its one sequence)."""
    return generator.rows(index) if isinstance(generator, PointStreams) else generator


def batch_generator(generator: Randomness, device: torch.device | str | None = None) -> torch.Generator | None:
    """A ``torch.Generator`` for a draw that is batch-level by nature (a permutation of the
    batch, one shared patch): ``generator`` itself, or one seeded from the streams."""
    if not isinstance(generator, PointStreams):
        return generator
    return torch.Generator(device=device or generator.device).manual_seed(generator.initial_seed())


def _streams_for(shape: tuple[int, ...], generator: PointStreams) -> tuple[int, ...]:
    generator._check(tuple(shape))
    return tuple(shape[1:])


def rand(shape: tuple[int, ...], generator: Randomness, *, device: torch.device | str | None = None,
         dtype: torch.dtype = torch.float32) -> Tensor:
    """``torch.rand(shape)`` from ``generator``; with streams, row ``i`` from stream ``i``."""
    if isinstance(generator, PointStreams):
        return generator.rand(_streams_for(shape, generator), dtype).to(device or generator.device)
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def randn(shape: tuple[int, ...], generator: Randomness, *, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """``torch.randn(shape)`` from ``generator``; with streams, row ``i`` from stream ``i``."""
    if isinstance(generator, PointStreams):
        return generator.randn(_streams_for(shape, generator), dtype).to(device or generator.device)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def randint(high: int, shape: tuple[int, ...], generator: Randomness, *,
            device: torch.device | str | None = None) -> Tensor:
    """``torch.randint(0, high, shape)`` from ``generator``; with streams, row ``i`` from stream ``i``."""
    if isinstance(generator, PointStreams):
        return generator.randint(high, _streams_for(shape, generator)).to(device or generator.device)
    return torch.randint(0, high, shape, generator=generator, device=device)
