"""The (adversarial direction, top eigenvector) plane, its paired curvature rows, and the [0, 1] box."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import _train, make_mlp
from torch import nn

from advlab.geometry.analysis import analyse
from advlab.geometry.box import box_section
from advlab.geometry.eigenplane import eigen_plane, second_difference
from advlab.geometry.hessian import dense_hessian
from advlab.geometry.scale import scale_hessian_eigs
from advlab.report.plotting import colours_for
from advlab.threat import flat


def _smooth_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.Softplus(), nn.Linear(10, 4)).double().eval()


def test_v_is_orthogonal_to_u_and_is_the_top_eigenvector():
    model = _smooth_model()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(dim=1)
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plane = eigen_plane(model, x, y, direction, h=0.05, steps=16, generator=torch.Generator().manual_seed(3))
    u, v = flat(plane["u"]), flat(plane["v"])
    assert torch.allclose((u * v).sum(dim=1), torch.zeros(6, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(u.norm(dim=1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(v.norm(dim=1), torch.ones(6, dtype=torch.float64))
    top = scale_hessian_eigs(model, x, y, k=1, h=0.05, steps=16, generator=torch.Generator().manual_seed(3))
    used_first = ~plane["used_second"]
    assert bool(used_first.any())
    assert torch.allclose(plane["eigenvalue"][used_first], top[used_first, 0], rtol=1e-4)
    assert not (direction - torch.randn(x.shape, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(2))).any()  # not mutated


def test_second_difference_tends_to_the_quadratic_form():
    model = _smooth_model()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2])
    d = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    measured = second_difference(model, x, y, d, step=1e-3)
    hessian = dense_hessian(model, x, y).double()  # (B, D, D)
    unit = flat(d) / flat(d).norm(dim=1, keepdim=True)
    exact = torch.einsum("bi,bij,bj->b", unit, hessian, unit)
    assert torch.allclose(measured, exact, rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="step"):
        second_difference(model, x, y, d, step=0.0)


def test_box_section_is_the_exact_polygon():
    x0 = torch.full((1, 2, 2), 0.5)
    u = torch.zeros(1, 2, 2)
    v = torch.zeros(1, 2, 2)
    u[0, 0, 0], v[0, 0, 1] = 1.0, 1.0
    box = box_section(x0, u, v, extent=1.0)
    assert box["area"] == pytest.approx(1.0) and box["fraction"] == pytest.approx(0.25)
    assert float(box["vertices"].abs().max()) == pytest.approx(0.5)
    x0[0, 1, 1] = 0.0  # a pixel at 0 that moves with a + b: only the half-plane a + b >= 0 is valid
    u[0, 1, 1], v[0, 1, 1] = 1.0, 1.0
    half = box_section(x0, u, v, extent=1.0)
    assert half["fraction"] == pytest.approx(0.125)
    assert bool((half["vertices"].sum(dim=1) >= -1e-9).all())
    x0[0, 1, 0] = 2.0  # outside the box: nothing is valid
    assert len(box_section(x0, u, v, extent=1.0)["vertices"]) == 0


@pytest.fixture(scope="module")
def plane_summary(digits, digits_mlp, tmp_path_factory):
    x_tr, y_tr, x_te, y_te = digits
    other = _train(make_mlp(seed=1, hidden=32), x_tr, y_tr, epochs=4)
    out = tmp_path_factory.mktemp("plane")
    summary = analyse({"standard": digits_mlp, "robust": other}, x_te[:40], y_te[:40], out, points=2,
                      eigs=2, directions=2, plane_points=16, resolution=9, hutchinson_samples=2,
                      landscape_batch=8, subspace_dims=(16,), generator=torch.Generator().manual_seed(0))
    return summary, out


def test_plane_step_writes_figures_and_paired_rows(plane_summary):
    summary, out = plane_summary
    plane = summary.curves["eigenvector_plane"]
    assert plane["points"] == 16 and summary.params["plane_points"] == 16
    for name in ("eigenvector_plane_0", "eigenvector_plane_1", "eigenvector_plane_flattening"):
        assert (out / summary.figures[name]).stat().st_size > 1000
    assert "n = 16" in summary.captions["eigenvector_plane_flattening"]
    stored = json.loads((out / "summary.json").read_text())
    for name in ("plane_curvature_eigenvector", "plane_curvature_adversarial", "plane_curvature_shared",
                 "plane_curvature_restricted"):
        row = stored["comparison"][name]
        assert 12 <= row["n"] <= 16 and row["verdict"] in ("lower", "higher", "no significant difference")
        lo, hi = row["ci"]
        assert lo <= row["ratio"] <= hi and math.isfinite(lo)
        assert row == stored["curves"]["eigenvector_plane"]["comparison"][name]
    row = stored["comparison"]["plane_curvature_eigenvector"]
    assert f"{row['ratio']:.3g}" in summary.captions["eigenvector_plane_flattening"]
    curvature = plane["per_point"]["standard"]["curvature_v"]
    assert curvature.shape == (16,) and bool(torch.isfinite(curvature).all())


def test_every_section_figure_has_its_box(plane_summary):
    summary, _ = plane_summary
    sections = [name for name in summary.figures if name.startswith(("cross_section_", "eigenvector_plane_"))
                and name != "eigenvector_plane_flattening"]
    assert len(sections) == 4
    for name in sections:
        boxes = summary.curves["boxes"][name]
        assert set(boxes) == {"standard", "robust"}
        for box in boxes.values():
            assert len(box["vertices"]) >= 1 and 0.0 <= box["fraction"] <= 1.0
            assert bool((box["vertices"].abs().sum(dim=1) < 1e-6).any()) or box["fraction"] > 0  # holds x0
        assert "[0, 1] box" in summary.captions[name]


def test_figures_use_the_report_colours(plane_summary):
    summary, _ = plane_summary
    assert summary.params["colours"] == colours_for(["standard", "robust"])


def test_restricted_plane_finds_the_largest_curvature_orthogonal_to_u():
    from advlab.geometry.scale import ScaleHessianOperator

    model = _smooth_model()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    y = model(x).argmax(dim=1)
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    kwargs = {"h": 0.01, "steps": 16}
    plain = eigen_plane(model, x, y, direction, generator=torch.Generator().manual_seed(8), **kwargs)
    restricted = eigen_plane(model, x, y, direction, restrict=True,
                             generator=torch.Generator().manual_seed(8), **kwargs)
    u, v = flat(restricted["u"]), flat(restricted["v"])
    assert torch.allclose((u * v).sum(dim=1), torch.zeros(4, dtype=torch.float64), atol=1e-8)
    operator = ScaleHessianOperator(model, x, y, h=0.01)

    def form(w):
        return (flat(w) * operator(flat(w))).sum(dim=1)

    assert bool((form(restricted["v"]) >= form(plain["v"]) - 1e-6).all())
