"""Per-point random streams (advlab.streams): keyed by seed and global index, batch-independent,
with the laws they claim; a torch.Generator draws exactly as torch does."""

from __future__ import annotations

import math

import pytest
import torch

from advlab import ThreatModel, streams
from advlab.streams import PointStreams, batch_generator, for_rows


def test_a_point_draws_the_same_in_any_block() -> None:
    whole, alone = PointStreams(5, 0, 10), PointStreams(5, 7, 1)
    for _ in range(3):  # several draws: the counters advance the same way
        torch.testing.assert_close(whole.rand((4, 3))[7], alone.rand((4, 3))[0], rtol=0, atol=0)
    assert not torch.equal(PointStreams(5, 0, 2).rand((8,))[0], PointStreams(6, 0, 2).rand((8,))[0])
    rows = PointStreams(5, 0, 2).rand((8,))
    assert not torch.equal(rows[0], rows[1])


def test_views_share_and_advance_only_their_rows() -> None:
    block, reference = PointStreams(1, 0, 4), PointStreams(1, 0, 4)
    view = for_rows(block, torch.tensor([1, 3]))
    first = view.randn((5,))
    assert torch.equal(first, reference.randn((5,))[[1, 3]])
    nested = for_rows(view, torch.tensor([True, False]))  # row 1 of the block
    again = nested.rand((2,))
    ref = PointStreams(1, 1, 1)
    ref.randn((5,))
    assert torch.equal(again, ref.rand((2,)))
    untouched = PointStreams(1, 0, 1).rand((2,))
    assert torch.equal(for_rows(block, torch.tensor([0])).rand((2,)), untouched)  # row 0 never drew


def test_laws() -> None:
    s = PointStreams(0, 0, 400)
    u = s.rand((500,))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    n = s.randn((500,), torch.float64)
    assert n.dtype == torch.float64
    assert abs(n.mean().item()) < 0.01 and abs(n.std().item() - 1) < 0.01
    assert abs((n.abs() < 1.96).double().mean().item() - 0.95) < 0.005
    k = s.randint(7, (500,))
    share = torch.bincount(k.flatten(), minlength=7).double() / k.numel()
    assert k.min() >= 0 and k.max() < 7 and (share - 1 / 7).abs().max() < 0.005
    for dtype in (torch.float16, torch.bfloat16):
        h = s.rand((50,), dtype)
        assert h.dtype == dtype and h.min() >= 0 and h.max() < 1


def test_torch_generator_path_is_torch() -> None:
    shape = (3, 4)
    for draw, reference in ((streams.rand, torch.rand), (streams.randn, torch.randn)):
        a = draw(shape, torch.Generator().manual_seed(3))
        b = reference(shape, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
    a = streams.randint(5, shape, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.randint(0, 5, shape, generator=torch.Generator().manual_seed(3)))
    g = torch.Generator().manual_seed(1)
    assert for_rows(g, torch.tensor([0])) is g and batch_generator(g) is g and batch_generator(None) is None
    made = batch_generator(PointStreams(2, 10, 3))
    assert isinstance(made, torch.Generator)
    assert made.initial_seed() == batch_generator(PointStreams(2, 10, 5)).initial_seed()


def test_random_init_per_point() -> None:
    x = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    for norm, eps in (("linf", 0.1), ("l2", 1.0), ("l1", 3.0)):
        threat = ThreatModel(norm, eps)
        whole = threat.random_init(x, generator=PointStreams(0, 0, 6))
        part = threat.random_init(x[4:], generator=PointStreams(0, 4, 2))
        torch.testing.assert_close(part, whole[4:], rtol=1e-6, atol=1e-7)
        assert threat.contains(x, whole).all()


def test_bad_draws_are_clear_errors() -> None:
    s = PointStreams(0, 0, 3)
    with pytest.raises(ValueError, match="points=3"):
        streams.rand((4, 2), s)
    with pytest.raises(IndexError, match="out of range"):
        s.rows(torch.tensor([3]))
    with pytest.raises(ValueError, match="high"):
        s.randint(0, (2,))
    assert len(PointStreams(0, 0, 0)) == 0 and "rows=3" in repr(s)
    assert math.isfinite(s.randn((1000,)).abs().max().item())
