"""The batched cross-sections agree with the dense grid; CURE bounds at scale h bracket r*."""

from __future__ import annotations

import math

import torch
from test_geometry_bounds import A, exact_minimal_step, quadratic
from torch import nn

from advlab.geometry import curvature_bounds
from advlab.geometry.boundary_batch import dense_reference, section_curvatures
from advlab.geometry.compare_measures import boundary_curvatures, deepfool_info


def _curved_model() -> nn.Module:
    """A small smooth 3-class network on 6 inputs (curved boundaries)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Softplus(beta=3),
                          nn.Linear(32, 3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model


def test_batched_sections_match_the_dense_grid_within_tolerance():
    model = _curved_model()
    x = torch.rand(12, 6, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    info = deepfool_info(model, x, y)
    direction = info.x_adv - x
    second = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    norms = torch.where(info.success, info.norm, torch.full_like(info.norm, math.nan)).double()
    norms[0] = math.nan  # a failed point stays nan
    for resolution in (31, 20):
        fast_k, fast_c = section_curvatures(model, x, direction, second, 2.5 * norms, resolution=resolution)
        ref_k, ref_c = dense_reference(model, x, direction, second, 2.5 * norms, resolution=resolution)
        assert torch.equal(torch.isnan(fast_k), torch.isnan(ref_k)) and bool(torch.isnan(fast_k[0]))
        finite = torch.isfinite(ref_k)
        assert int(finite.sum()) >= 8
        # the documented tolerance: equal to the dense reference up to float rounding (1e-6 relative)
        assert torch.allclose(fast_k[finite], ref_k[finite], rtol=1e-6, atol=1e-9)
        assert torch.allclose(fast_c[finite], ref_c[finite], rtol=1e-6, atol=1e-9)
    values = boundary_curvatures(model, x, direction, norms, second, resolution=20)
    assert torch.allclose(values[finite], (fast_k.abs() * fast_c)[finite], rtol=1e-6)


def test_batched_sections_do_not_mutate_and_restore_mode():
    model = _curved_model().train()
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(3))
    before = x.clone()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    section_curvatures(model, x, direction, torch.randn(x.shape), torch.full((4,), 0.5, dtype=torch.float64))
    assert torch.equal(x, before) and model.training


def test_scale_bounds_bracket_the_exact_step_on_a_quadratic_loss():
    x = torch.rand(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    threshold = 1.5
    exact = exact_minimal_step(x, threshold)
    pointwise = curvature_bounds(nn.Identity(), x, torch.zeros(16, dtype=torch.long), loss=quadratic,
                                 threshold=threshold, steps=2, generator=torch.Generator().manual_seed(0))
    for h in (0.05, 0.5, 2.0):  # a quadratic's secant curvature is its Hessian at every scale
        bounds = curvature_bounds(nn.Identity(), x, torch.zeros(16, dtype=torch.long), loss=quadratic,
                                  threshold=threshold, steps=2, curvature="scale", h=h,
                                  generator=torch.Generator().manual_seed(0))
        assert bool((bounds["lower"] <= exact * (1 + 1e-6)).all())
        assert bool((exact <= bounds["upper"] * (1 + 1e-6)).all())
        assert torch.allclose(bounds["top_eigenvalue"], pointwise["top_eigenvalue"], rtol=1e-6)
        assert torch.allclose(bounds["lower"], pointwise["lower"], rtol=1e-6)
    assert float(pointwise["top_eigenvalue"].max()) <= float(torch.linalg.eigvalsh(A).max()) + 1e-9


def test_scale_bounds_converge_to_the_pointwise_ones_on_a_softplus_model():
    model = _curved_model().double()
    x = torch.rand(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    pointwise = curvature_bounds(model, x, y, loss="ce", steps=6, generator=torch.Generator().manual_seed(0))
    scale = curvature_bounds(model, x, y, loss="ce", steps=6, curvature="scale", h=1e-4,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(scale["top_eigenvalue"], pointwise["top_eigenvalue"], rtol=1e-4, atol=1e-8)
    assert torch.allclose(scale["lower"], pointwise["lower"], rtol=1e-4)
    try:
        curvature_bounds(model, x, y, loss="ce", curvature="secant")
    except ValueError as error:
        assert "pointwise" in str(error)
    else:
        raise AssertionError("an unknown curvature must raise")
