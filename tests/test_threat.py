"""ThreatModel: norms, projections, random starts, ascent directions and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.threat import ThreatModel, canonical_norm, lp_norm, project_l1_ball

NORMS = ["linf", "l2", "l1"]
ORDS = {"linf": math.inf, "l2": 2, "l1": 1}
SHAPES = [(4, 7), (3, 1, 4, 4), (2, 3, 2, 5), (1, 1)]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES)
def test_distance_matches_torch_vector_norm(norm: str, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(1)
    x, x_adv = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    expected = torch.linalg.vector_norm((x_adv - x).reshape(shape[0], -1), ord=ORDS[norm], dim=1)
    threat = ThreatModel(norm, 0.1)
    torch.testing.assert_close(threat.distance(x, x_adv), expected)
    torch.testing.assert_close(lp_norm(x_adv - x, norm), expected)


@pytest.mark.parametrize("alias,expected", [("Linf", "linf"), ("inf", "linf"), (math.inf, "linf"),
                                            ("L-inf", "linf"), (2, "l2"), (2.0, "l2"), ("L2", "l2"),
                                            (1, "l1"), (np.float64(1.0), "l1")])
def test_canonical_norm_aliases(alias: object, expected: str) -> None:
    assert canonical_norm(alias) == expected  # type: ignore[arg-type]
    assert ThreatModel(alias, 0.1).norm == expected  # type: ignore[arg-type]


# ---------------------------------------------------------------- L1 projection vs brute force
def _l1_projection_bisection(v: np.ndarray, eps: float) -> np.ndarray:
    """Projection onto the L1 ball by bisection on the soft threshold theta (KKT conditions)."""
    if np.abs(v).sum() <= eps:
        return v.copy()
    low, high = 0.0, float(np.abs(v).max())
    for _ in range(200):
        theta = 0.5 * (low + high)
        if np.maximum(np.abs(v) - theta, 0.0).sum() > eps:
            low = theta
        else:
            high = theta
    return np.sign(v) * np.maximum(np.abs(v) - 0.5 * (low + high), 0.0)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12),
       eps=st.floats(0.0, 6.0))
def test_l1_projection_equals_bisection(values: list[float], eps: float) -> None:
    v = np.array(values, dtype=np.float64)
    got = project_l1_ball(torch.tensor(v)[None], torch.tensor([eps], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(got, _l1_projection_bisection(v, eps), atol=1e-9)
    assert np.abs(got).sum() <= eps + 1e-9


def test_l1_projection_is_closest_point_among_random_feasible_points() -> None:
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(1, 6, generator=gen, dtype=torch.float64) * 2
    eps = torch.tensor([1.0], dtype=torch.float64)
    proj = project_l1_ball(v, eps)
    others = ThreatModel("l1", 1.0, bounds=(-50, 50)).random_init(torch.zeros(5000, 6, dtype=torch.float64), generator=gen)
    assert (others - v).norm(dim=1).min() >= (proj - v).norm() - 1e-12


# ---------------------------------------------------------------- projections (property tests)
@st.composite
def threat_cases(draw: st.DrawFn) -> tuple[ThreatModel, torch.Tensor, torch.Tensor]:
    norm = draw(st.sampled_from(NORMS))
    batch = draw(st.integers(1, 5))
    shape = (batch, *draw(st.sampled_from([(6,), (1, 3, 3), (2, 2, 3)])))
    if draw(st.booleans()):
        eps: float | torch.Tensor = draw(st.sampled_from([0.0, 1e-3, 0.1, 0.5, 3.0]))
    else:
        eps = torch.tensor(draw(st.lists(st.floats(0.0, 3.0), min_size=batch, max_size=batch)))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    x_adv = x + torch.randn(shape, generator=gen) * draw(st.sampled_from([0.01, 0.3, 3.0]))
    return ThreatModel(norm, eps), x, x_adv


@settings(max_examples=80, deadline=None)
@given(case=threat_cases())
def test_projection_lands_inside_and_is_idempotent(case: tuple[ThreatModel, torch.Tensor, torch.Tensor]) -> None:
    threat, x, x_adv = case
    projected = threat.project(x, x_adv)
    assert projected.shape == x.shape
    assert threat.contains(x, projected).all()
    torch.testing.assert_close(threat.project(x, projected), projected, atol=1e-6, rtol=0)
    eps = threat.eps_per_sample(x)
    assert (threat.distance(x, projected) <= eps * (1 + 1e-5) + 1e-6).all()
    # points already inside are left alone
    inside = threat.contains(x, x_adv, atol=0.0)
    torch.testing.assert_close(projected[inside], x_adv[inside], atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(case=threat_cases())
def test_project_delta_zero_eps_gives_zero(case: tuple[ThreatModel, torch.Tensor, torch.Tensor]) -> None:
    threat, x, x_adv = case
    delta = threat.with_eps(0.0).project_delta(x_adv - x)
    assert torch.count_nonzero(delta) == 0


@settings(max_examples=40, deadline=None)
@given(case=threat_cases())
def test_random_init_inside_ball(case: tuple[ThreatModel, torch.Tensor, torch.Tensor]) -> None:
    threat, x, _ = case
    start = threat.random_init(x, generator=torch.Generator().manual_seed(3))
    assert start.shape == x.shape
    assert threat.contains(x, start).all()
    again = threat.random_init(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(start, again)


# ---------------------------------------------------------------- uniformity of random_init
def _draws(norm: str, dim: int, n: int = 20000, eps: float = 1.0) -> torch.Tensor:
    """``n`` random starts around 0 in a box too wide to clip: ``(n, dim)``."""
    threat = ThreatModel(norm, eps, bounds=(-10.0, 10.0))
    return threat.random_init(torch.zeros(n, dim), generator=torch.Generator().manual_seed(0))


def _close_to(frac: float, p: float, n: int = 20000) -> bool:
    return abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-3


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_random_init_radius_distribution_is_uniform_in_the_ball(norm: str, dim: int) -> None:
    # For a uniform point in a d-dimensional ball of any norm, P(||x|| <= r * eps) = r**d.
    radii = lp_norm(_draws(norm, dim), norm)
    assert radii.max() <= 1.0 + 1e-6
    for r in (0.5, 0.8):
        assert _close_to((radii <= r).double().mean().item(), r**dim)


def test_random_init_l1_coordinate_magnitude_and_signs() -> None:
    dim = 5
    points = _draws("l1", dim)
    # uniform in the cross-polytope: each |x_i| has mean eps / (d + 1); signs are fair coins
    np.testing.assert_allclose(points.abs().mean(dim=0).numpy(), 1 / (dim + 1), rtol=0.05)
    assert ((points > 0).double().mean() - 0.5).abs() < 0.02


def test_random_init_linf_coordinates_uniform() -> None:
    points = _draws("linf", 4)
    np.testing.assert_allclose(points.abs().mean(dim=0).numpy(), 0.5, rtol=0.03)
    assert points.abs().max() <= 1.0


def test_random_init_respects_per_sample_eps_and_box() -> None:
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    threat = ThreatModel("l2", torch.tensor([0.0, 0.2, 2.0]))
    start = threat.random_init(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(start[0], x[0])
    assert threat.contains(x, start).all()
    assert start.min() >= 0 and start.max() <= 1


# ---------------------------------------------------------------- ascent direction and step
@pytest.mark.parametrize("norm", NORMS)
def test_ascent_direction_has_unit_norm_and_ascends(norm: str) -> None:
    grad = torch.randn(6, 2, 4, 5, generator=torch.Generator().manual_seed(0))
    threat = ThreatModel(norm, 0.1)
    direction = threat.ascent_direction(grad)
    torch.testing.assert_close(lp_norm(direction, norm), torch.ones(6))
    inner = (direction * grad).flatten(1).sum(dim=1)  # (B,)
    if norm == "linf":  # <g, sign g> = ||g||_1, the dual norm
        torch.testing.assert_close(inner, lp_norm(grad, "l1"))
    elif norm == "l2":
        torch.testing.assert_close(inner, lp_norm(grad, "l2"))
    else:  # sparse step on the largest coordinates: between the mean |g| and ||g||_inf
        assert (inner <= lp_norm(grad, "linf") + 1e-6).all()
        assert (inner > grad.abs().flatten(1).mean(dim=1)).all()
        assert ((direction != 0).flatten(1).sum(dim=1) == 2).all()  # top 5% of 40 coordinates


@pytest.mark.parametrize("norm", NORMS)
def test_ascent_direction_of_zero_gradient_is_zero(norm: str) -> None:
    direction = ThreatModel(norm, 0.1).ascent_direction(torch.zeros(2, 8))
    assert torch.count_nonzero(direction) == 0


def test_step_with_per_sample_step_size() -> None:
    threat = ThreatModel("linf", 0.5)
    x, grad = torch.full((2, 3), 0.5), torch.tensor([[1.0, -2.0, 0.0], [-1.0, 1.0, 3.0]])
    out = threat.step(x, grad, torch.tensor([0.1, 0.2]))
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.4, 0.5], [0.3, 0.7, 0.7]]))


def test_select_and_with_eps() -> None:
    threat = ThreatModel("l2", torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(threat.select(torch.tensor([2, 0])).eps, torch.tensor([0.3, 0.1]))
    assert ThreatModel("l2", 0.1).select(torch.tensor([0])).eps == 0.1
    assert threat.with_eps(0.5).eps == 0.5 and threat.with_eps(0.5).norm == "l2"
    single = ThreatModel("linf", torch.tensor(0.25))
    torch.testing.assert_close(single.eps_per_sample(torch.zeros(4, 2)), torch.full((4,), 0.25))


def test_contains_detects_ball_box_and_nan() -> None:
    threat = ThreatModel("linf", 0.1)
    x = torch.full((4, 2), 0.5)
    x_adv = torch.tensor([[0.55, 0.45], [0.7, 0.5], [0.5, float("nan")], [0.6, 0.4]])
    assert threat.contains(x, x_adv).tolist() == [True, False, False, True]
    edge = torch.tensor([[0.0, 0.0]])
    assert not ThreatModel("linf", 1.0).contains(edge, edge - 0.01).any()  # outside the box


@pytest.mark.parametrize("norm", NORMS)
def test_contains_rejects_inf_even_with_infinite_bounds(norm: str) -> None:
    inf = float("inf")
    threat = ThreatModel(norm, 1e30, bounds=(-inf, inf))
    x = torch.zeros(4, 3)
    x_adv = torch.tensor([[1.0, -2.0, 3.0], [inf, 0.0, 0.0], [0.0, -inf, 0.0], [0.0, 0.0, float("nan")]])
    assert threat.contains(x, x_adv).tolist() == [True, False, False, False]
    assert threat.contains(torch.zeros(2, 0), torch.zeros(2, 0)).tolist() == [True, True]  # no features


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_float_eps(eps: float) -> None:
    with pytest.raises(ValueError, match="finite and non-negative"):
        ThreatModel("linf", eps)


@pytest.mark.parametrize("eps", [torch.tensor([0.1, -0.1]), torch.tensor([float("nan"), 0.1])])
def test_bad_tensor_eps(eps: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="finite and non-negative"):
        ThreatModel("l2", eps)


def test_bad_eps_type() -> None:
    with pytest.raises(TypeError, match="eps must be a float"):
        ThreatModel("l2", "0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("norm", ["l3", "l0", "euclid", 3, 1.5])
def test_unknown_norm(norm: object) -> None:
    with pytest.raises(ValueError, match="unknown norm"):
        ThreatModel(norm, 0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5), (0.0, float("nan"))])
def test_bad_bounds(bounds: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="low < high"):
        ThreatModel("linf", 0.1, bounds=bounds)


def test_per_sample_eps_length_mismatch() -> None:
    threat = ThreatModel("linf", torch.tensor([0.1, 0.2]))
    x = torch.rand(3, 4)
    with pytest.raises(ValueError, match="per-sample eps has 2 entries but the batch has 3"):
        threat.project(x, x)
    with pytest.raises(ValueError, match="per-sample eps"):
        threat.random_init(x)


@settings(max_examples=60, deadline=None)
@given(case=threat_cases())
def test_linf_box_projection_is_the_exact_ball_box_projection(case: tuple[ThreatModel, torch.Tensor, torch.Tensor]) -> None:
    """Linf projection = clamp to the cached box: it matches "project the perturbation, then clip"
    (up to float round-off), is idempotent bit for bit, and the box is the ball cut by the bounds."""
    threat, x, x_adv = case
    threat = ThreatModel("linf", threat.eps, bounds=(0.0, 1.0))
    lower, upper = threat.linf_box(x)
    e = threat.eps_per_sample(x).reshape(-1, *([1] * (x.dim() - 1)))
    torch.testing.assert_close(lower, (x - e).clamp(min=0.0), atol=0, rtol=0)
    torch.testing.assert_close(upper, (x + e).clamp(max=1.0), atol=0, rtol=0)
    projected = threat.project(x, x_adv)
    reference = (x + (x_adv - x).clamp(-e, e)).clamp(0.0, 1.0)  # delta onto the ball, then the box
    torch.testing.assert_close(projected, reference, atol=1e-6, rtol=0)
    assert torch.equal(threat.project(x, projected), projected)
    assert threat.contains(x, projected).all()


@pytest.mark.parametrize("kwargs", [{}, {"norm": "l2"}, {"norm": "linf", "bounds": (0.0, 1.0)}])
def test_eps_is_required(kwargs: dict) -> None:
    with pytest.raises(TypeError, match=r"ThreatModel needs eps, e.g. ThreatModel\(norm='linf', eps=8/255\)"):
        ThreatModel(**kwargs)


def test_flat_is_public_and_keeps_the_old_name() -> None:
    from advlab import threat as threat_module

    x = torch.arange(24.0).reshape(2, 3, 4)
    assert threat_module.flat(x).shape == (2, 12)
    assert threat_module.flat(torch.zeros(0, 3, 4)).shape == (0, 12)
    assert threat_module._flat is threat_module.flat


# ------------------------------------------------- the L1 ball intersected with the box (APGD-L1)
def _l1_box_bisection(v: np.ndarray, eps: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Reference solver: bisection on the multiplier of the KKT form, in float64."""
    def point(lam: float) -> np.ndarray:
        return np.clip(np.sign(v) * np.maximum(np.abs(v) - lam, 0.0), low, high)

    if np.abs(point(0.0)).sum() <= eps:
        return point(0.0)
    a, b = 0.0, float(np.abs(v).max())
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (mid, b) if np.abs(point(mid)).sum() > eps else (a, mid)
    return point(b)


def test_l1_box_projection_equals_a_bisection_solver_and_beats_random_feasible_points() -> None:
    from advlab.threat import project_l1_box

    gen = np.random.default_rng(0)
    for _ in range(100):
        d = int(gen.integers(1, 9))
        x = gen.random(d)
        v = gen.normal(size=d) * gen.random() * 2
        eps = float(gen.random() * 2)
        low, high = -x, 1 - x
        got = project_l1_box(torch.tensor(v)[None], torch.tensor([eps], dtype=torch.float64), torch.tensor(low)[None],
                             torch.tensor(high)[None])[0].numpy()
        np.testing.assert_allclose(got, _l1_box_bisection(v, eps, low, high), atol=1e-7)
        assert np.abs(got).sum() <= eps + 1e-9 and (got >= low - 1e-12).all() and (got <= high + 1e-12).all()
        # brute force: no feasible point (random ones, scaled into the set) is closer to v
        others = np.clip(gen.normal(size=(500, d)), low, high)
        others *= np.minimum(1.0, eps / np.maximum(np.abs(others).sum(axis=1), 1e-12))[:, None]
        assert (np.linalg.norm(others - v, axis=1) >= np.linalg.norm(got - v) - 1e-9).all()


def test_l1_project_is_exact_on_the_intersection_not_ball_then_clip() -> None:
    """Ball-then-clip spends the budget on a coordinate the box stops and clips it away; the
    exact projection keeps the move of the coordinate that has room."""
    x = torch.tensor([[0.95, 0.5, 0.5]])
    threat = ThreatModel("l1", 0.6)
    target = x + torch.tensor([[1.0, 0.3, 0.0]])  # the first coordinate can only move by 0.05
    exact = threat.project(x, target)
    ball_then_clip = threat.clip(x + threat.project_delta(target - x))
    assert threat.contains(x, exact).all()
    assert threat.distance(x, exact).item() == pytest.approx(0.35, abs=1e-6)  # 0.05 + 0.3
    assert threat.distance(x, ball_then_clip).item() < 0.1  # 0.05 + 0
    assert (exact - target).norm() < (ball_then_clip - target).norm()
