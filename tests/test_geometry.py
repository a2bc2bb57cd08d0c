"""Tests of advlab.geometry: Hessians, Lanczos, curvature bounds, cross-sections, landscapes, random ReLU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from advlab import geometry
from advlab.attacks.losses import get_loss
from advlab.experiments import random_relu as relu_experiments
from advlab.experiments.spirals import spirals_compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smooth_mlp(in_dim: int = 16, hidden: int = 12, classes: int = 5, seed: int = 0) -> nn.Module:
    """A float64 MLP with smooth activations, so input Hessians are full and non-trivial."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                         nn.Softplus(beta=2.0), nn.Linear(hidden, classes)).double()


def reference_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per-sample input Hessians ``(B, D, D)`` from torch.autograd.functional.hessian."""
    loss_fn = get_loss(loss)
    rows = []
    for i in range(len(x)):
        def per_sample(point: torch.Tensor, i: int = i) -> torch.Tensor:
            return loss_fn(model(point[None]), y[i:i + 1])[0]

        rows.append(torch.autograd.functional.hessian(per_sample, x[i]).reshape(x[i].numel(), -1))
    return torch.stack(rows)


def top_by_magnitude(eigenvalues: torch.Tensor, k: int) -> torch.Tensor:
    order = eigenvalues.abs().argsort(dim=1, descending=True)[:, :k]
    return eigenvalues.gather(1, order)


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 3, 1])


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000


# --- Hessian-vector products -----------------------------------------------------------------

@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_hvp_equals_dense_hessian_times_vector(batch, loss):
    x, y = batch
    model = smooth_mlp()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    hessian = reference_hessian(model, x, y, loss)
    expected = torch.einsum("bij,bj->bi", hessian, v.flatten(1))
    product = geometry.hvp(model, x, y, v, loss=loss)
    assert product.shape == x.shape
    torch.testing.assert_close(product.flatten(1), expected, rtol=1e-8, atol=1e-12)
    assert expected.abs().max() > 1e-4  # a non-trivial Hessian


def test_batched_hvp_equals_per_sample_hvps(batch):
    x, y = batch
    model = smooth_mlp()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    together = geometry.hvp(model, x, y, v)
    alone = torch.cat([geometry.hvp(model, x[i:i + 1], y[i:i + 1], v[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-14)


def test_dense_hessian_matches_autograd_and_restores_model(batch):
    x, y = batch
    model = smooth_mlp().train()
    dense = geometry.dense_hessian(model, x, y, batch_size=7)  # chunks that do not divide D
    torch.testing.assert_close(dense, reference_hessian(model, x, y), rtol=1e-8, atol=1e-12)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_hutchinson_estimates_frobenius_norm(batch):
    x, y = batch
    model = smooth_mlp()
    exact = reference_hessian(model, x, y).pow(2).sum(dim=(1, 2))
    estimate = geometry.hutchinson_frobenius(model, x, y, samples=3000, probes_per_pass=500,
                                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate, exact, rtol=0.05, atol=0.0)


def test_cure_curvature_is_h_squared_times_hz(batch):
    x, y = batch
    model = smooth_mlp()
    h = 1e-4
    gradient = geometry.input_gradient(model, x, y)
    z = gradient.sign() / gradient.sign().flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    expected = geometry.hvp(model, x, y, z).flatten(1).pow(2).sum(dim=1) * h**2
    torch.testing.assert_close(geometry.cure_curvature(model, x, y, h=h), expected, rtol=1e-3, atol=0.0)


# --- eigenvalues -----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["LM", "LA"])
def test_lanczos_matches_eigvalsh(which):
    model = smooth_mlp(in_dim=64, hidden=32, classes=10)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64), torch.tensor([2, 7])
    exact = torch.linalg.eigvalsh(geometry.dense_hessian(model, x, y))  # ascending, checked above
    expected = top_by_magnitude(exact, 5) if which == "LM" else exact.flip(1)[:, :5]
    values, vectors = geometry.hessian_eigs(model, x, y, k=5, steps=40, which=which, generator=gen)
    torch.testing.assert_close(values, expected, rtol=1e-4, atol=1e-10)
    assert vectors.shape == (2, 5, 1, 8, 8)
    operator = geometry.HessianOperator(model, x, y)
    flat = vectors.flatten(2)
    residual = torch.stack([operator(flat[:, j]) for j in range(5)], 1) - values[..., None] * flat
    assert residual.norm(dim=2).max() < 1e-4 * values.abs().max()


def test_lanczos_handles_low_rank_relu_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double()
    x, y = torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 4])
    exact = top_by_magnitude(torch.linalg.eigvalsh(geometry.dense_hessian(model, x, y)), 12)
    operator = geometry.HessianOperator(model, x, y)
    values, _ = geometry.lanczos(operator, 64, 12, 30, batch_size=2,
                                 generator=torch.Generator().manual_seed(0))
    assert operator.calls == 30
    torch.testing.assert_close(values, exact, rtol=1e-6, atol=1e-12)
    assert values[:, 9:].abs().max() < 1e-10  # rank <= K - 1 = 9


def test_power_iteration_agrees_with_eigvalsh():
    gen = torch.Generator().manual_seed(0)
    rotations = torch.linalg.qr(torch.randn(2, 30, 30, generator=gen, dtype=torch.float64)).Q
    spectrum = torch.linspace(-0.5, 1.0, 30, dtype=torch.float64).pow(3).repeat(2, 1)
    spectrum[:, -3:] = torch.tensor([2.0, -3.0, 4.0], dtype=torch.float64)
    matrices = rotations @ torch.diag_embed(spectrum) @ rotations.transpose(1, 2)  # (2, 30, 30)
    calls = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.einsum("bij,bj->bi", matrices, v)

    expected = top_by_magnitude(torch.linalg.eigvalsh(matrices), 4)
    values, vectors = geometry.power_iteration_deflation(matvec, 30, 4, batch_size=2, tol=1e-12,
                                                         steps=2000, generator=gen)
    torch.testing.assert_close(values, expected, rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(values[:, :3], torch.tensor([[4.0, -3.0, 2.0]] * 2, dtype=torch.float64))
    assert vectors.shape == (2, 4, 30) and 4 < len(calls) <= 4 * 2000
    lanczos_values, _ = geometry.lanczos(matvec, 30, 4, 30, batch_size=2, generator=gen)
    torch.testing.assert_close(lanczos_values, expected, rtol=1e-10, atol=1e-12)


def test_hessian_spectrum_and_bad_inputs(batch):
    x, y = batch
    model = smooth_mlp()
    spectrum = geometry.hessian_spectrum(model, x, y)
    expected = torch.linalg.eigvalsh(reference_hessian(model, x, y)).flip(1)
    torch.testing.assert_close(spectrum, expected, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="max_dim"):
        geometry.hessian_spectrum(model, x, y, max_dim=8)
    with pytest.raises(ValueError, match="k must be"):
        geometry.hessian_eigs(model, x, y, k=17)
    with pytest.raises(ValueError, match="which"):
        geometry.hessian_eigs(model, x, y, k=2, which="SM")


# --- curvature bounds on an exactly quadratic loss ----------------------------------------------

class QuadraticMargin(nn.Module):
    """Logits ``(0, q(x))`` with ``q(x) = q0 + b.r + r^T A r / 2``, ``r = x - center``.

    For label 0 the margin loss ``cw`` is exactly ``q``: quadratic in ``x``, threshold 0."""

    def __init__(self, matrix: np.ndarray, linear: np.ndarray, offset: float, center: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.tensor(matrix, dtype=torch.float64))
        self.register_buffer("linear", torch.tensor(linear, dtype=torch.float64))
        self.register_buffer("center", torch.tensor(center, dtype=torch.float64))
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x.flatten(1) - self.center
        q = self.offset + r @ self.linear + 0.5 * ((r @ self.matrix) * r).sum(dim=1)
        return torch.stack([torch.zeros_like(q), q], dim=1)


def exact_minimal_norm(matrix: np.ndarray, linear: np.ndarray, offset: float, angles: int = 200_000) -> float:
    """min ||r|| s.t. q(r) >= 0 in 2-D: smallest root along each of ``angles`` directions."""
    theta = np.linspace(0.0, 2 * np.pi, angles, endpoint=False)
    u = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    a, k = u @ linear, 0.5 * np.einsum("ni,ij,nj->n", u, matrix, u)  # q = offset + a rho + k rho^2
    best = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = a**2 - 4 * k * offset
        for sign in (1.0, -1.0):
            root = np.where(np.abs(k) > 1e-12, (-a + sign * np.sqrt(disc)) / (2 * k), -offset / a)
            valid = (disc >= 0) & (root >= 0) & np.isfinite(root)
            if valid.any():
                best = min(best, float(root[valid].min()))
    return best


@pytest.mark.parametrize("eigenvalues", [(2.0, 0.5), (3.0, -1.0), (0.0, 0.0), (-0.3, -0.6), (4.0, 4.0)])
def test_curvature_bounds_bracket_exact_minimal_perturbation(eigenvalues):
    rng = np.random.default_rng(int(10 * sum(eigenvalues)) % 97)
    rotation, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    matrix = rotation @ np.diag(eigenvalues) @ rotation.T
    linear, offset, center = rng.normal(size=2), -0.3, np.array([0.5, 0.5])
    model = QuadraticMargin(matrix, linear, offset, center)
    x = torch.tensor(center, dtype=torch.float64)[None]
    bounds = geometry.curvature_bounds(model, x, torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    exact = exact_minimal_norm(matrix, linear, offset)
    assert math.isfinite(exact)
    lower, upper = float(bounds["lower"][0]), float(bounds["upper"][0])
    assert lower <= exact + 1e-9 and upper >= exact * (1 - 1e-6), (lower, exact, upper)
    torch.testing.assert_close(bounds["gap"], torch.tensor([0.3], dtype=torch.float64))
    torch.testing.assert_close(bounds["top_eigenvalue"], torch.tensor([max(eigenvalues)], dtype=torch.float64))


def test_curvature_bounds_are_tight_when_gradient_is_top_eigenvector():
    matrix, linear = np.diag([2.0, 0.5]), np.array([0.7, 0.0])
    model = QuadraticMargin(matrix, linear, -0.4, np.array([0.5, 0.5]))
    bounds = geometry.curvature_bounds(model, torch.full((1, 2), 0.5, dtype=torch.float64), torch.tensor([0]))
    exact = exact_minimal_norm(matrix, linear, -0.4)
    torch.testing.assert_close(bounds["lower"], bounds["upper"])
    assert float(bounds["lower"][0]) == pytest.approx(exact, rel=1e-6)


def test_smallest_step_edge_cases():
    linear = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0])
    curvature = torch.tensor([0.0, 2.0, -1.0, -10.0, 1.0])
    gap = torch.tensor([0.5, 0.5, 0.5, 0.5, -1.0])
    steps = geometry.smallest_step(linear, curvature, gap)
    assert steps[0] == pytest.approx(0.5)                              # linear: c / a
    assert steps[1] == pytest.approx((-1 + math.sqrt(1 + 2)) / 2)      # the paper's closed form
    assert math.isinf(steps[2]) and math.isinf(steps[3])               # never reaches the threshold
    assert steps[4] == 0.0                                             # already past it
    with pytest.raises(ValueError, match="threshold"):
        geometry.curvature_bounds(nn.Linear(2, 2), torch.rand(1, 2), loss=lambda z, y: z[:, 0])


# --- cross-sections --------------------------------------------------------------------------

def test_cross_section_classifies_centre_like_the_model(digits, tmp_path):
    _, _, x_test, y_test = digits
    torch.manual_seed(3)  # an untrained MLP: any classifier has a boundary
    digits_mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x0, y0 = x_test[:1], y_test[:1]
    direction = geometry.adversarial_direction(digits_mlp, x0)  # DeepFool, from the predicted class
    distance = float(direction.norm())
    section = geometry.cross_section(digits_mlp, x0[0], direction[0], extent=2 * distance,
                                     resolution=41, generator=torch.Generator().manual_seed(0))
    centre = section["predictions"][20, 20]
    assert int(centre) == section["label"] == int(digits_mlp(x0).argmax())
    assert section["predictions"].shape == (41, 41) and section["margins"][20, 20] > 0
    assert abs(float((section["u"] * section["v"]).sum())) < 1e-5
    offsets, crossings = geometry.boundary_profile(section)
    on_axis = crossings[offsets.abs() < 1e-9]
    step = 2 * section["extent"] / 40
    assert len(on_axis) == 1 and 0 < float(on_axis[0]) <= distance + step  # DeepFool's point is past it
    assert section["inside_box"][20, 20] and not section["inside_box"].all()
    other = geometry.cross_section(digits_mlp, x0[0], geometry.input_gradient(digits_mlp, x0, y0)[0],
                                   extent=2 * distance, resolution=41)
    path = geometry.plot_cross_sections([section, other], ["DeepFool direction", "gradient"],
                                        tmp_path / "sections.png")
    assert_png(path)


class ParabolicBoundary(nn.Module):
    """2-D inputs; class 1 where ``x1 - 0.5 - k (x2 - 0.5)^2 > 0``: a parabola of curvature 2k."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, 0] - 0.5 - self.k * (x[:, 1] - 0.5) ** 2
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.mark.parametrize("k", [0.0, 1.5, -1.0])
def test_boundary_curvature_recovers_parabola(k):
    x0 = torch.tensor([0.2, 0.5], dtype=torch.float64)
    section = geometry.cross_section(ParabolicBoundary(k), x0, torch.tensor([1.0, 0.0], dtype=torch.float64),
                                     torch.tensor([0.0, 1.0], dtype=torch.float64), extent=0.6,
                                     resolution=121)
    assert geometry.boundary_curvature(section, window=0.25) == pytest.approx(2 * k, abs=0.02)


def test_decision_regions_2d_writes_png(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    x = torch.rand(50, 2)
    assert_png(geometry.decision_regions_2d(model, x, (x[:, 0] > 0.5).long(), tmp_path / "regions.png",
                                            resolution=60))
    with pytest.raises(ValueError, match="2-D inputs"):
        geometry.decision_regions_2d(model, torch.rand(5, 3), torch.zeros(5, dtype=torch.long), tmp_path / "x.png")


# --- landscapes ------------------------------------------------------------------------------

def bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 10))


def test_weight_landscape_restores_weights_and_matches_loss_at_origin(digits, tmp_path):
    x, y = digits[0][:64], digits[1][:64]
    model = bn_cnn().train()
    with torch.no_grad():  # non-trivial running statistics
        model(x)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    surface = geometry.weight_landscape_2d(model, x, y, [-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5], generator=gen)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model.training
    model.eval()
    with torch.no_grad():
        reference = float(nn.functional.cross_entropy(model(x), y))
    assert float(surface["loss"][1, 1]) == pytest.approx(reference, rel=1e-6)
    assert surface["loss"].shape == (3, 3) and float(surface["loss"][0, 0]) != pytest.approx(reference)
    bad = geometry.filter_normalized_direction(model, generator=gen)
    bad["0.weight"] = torch.zeros(5)  # wrong shape: the evaluation fails ...
    with pytest.raises(RuntimeError):
        geometry.weight_landscape_1d(model, x, y, [1.0], direction=bad)
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())  # ... harmlessly
    curves = [geometry.weight_landscape_1d(model, x, y, torch.linspace(-1, 1, 5), generator=gen)
              for _ in range(2)]
    assert_png(geometry.plot_loss_curves(curves, ["model A", "model B"], tmp_path / "curves.png"))
    assert_png(geometry.plot_loss_surface(surface, tmp_path / "surface.png", title="weight space"))


def test_filter_normalized_direction_matches_filter_norms():
    model = bn_cnn()
    direction = geometry.filter_normalized_direction(model, generator=torch.Generator().manual_seed(0))
    conv = model[0].weight.detach()
    torch.testing.assert_close(direction["0.weight"].flatten(1).norm(dim=1), conv.flatten(1).norm(dim=1))
    assert not torch.equal(direction["0.weight"], conv)
    assert direction["0.bias"].abs().sum() == 0 and direction["1.weight"].abs().sum() == 0
    with_biases = geometry.filter_normalized_direction(model, include_biases=True)
    assert float(with_biases["4.bias"].norm()) == pytest.approx(float(model[4].bias.detach().norm()), rel=1e-5)


def test_input_loss_line_and_surface(batch):
    x, y = batch
    model = smooth_mlp()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    line = geometry.loss_line(model, x, y, direction, [-1.0, 0.0, 1.0])
    torch.testing.assert_close(line["loss"][1], nn.functional.cross_entropy(model(x), y, reduction="none"))
    surface = geometry.loss_surface(model, x, y, direction, None, [-1.0, 0.0, 1.0], [0.0, 0.5],
                                    generator=torch.Generator().manual_seed(1))
    assert surface["loss"].shape == (2, 3, 3)
    torch.testing.assert_close(surface["loss"][0], line["loss"])  # beta = 0 is the line
    with pytest.raises(ValueError, match="direction1 is zero"):
        geometry.loss_surface(model, x, y, torch.zeros_like(x), None, [0.0], [0.0])


# --- random ReLU networks --------------------------------------------------------------------

def test_random_relu_one_step_flips(tmp_path):
    gen = torch.Generator().manual_seed(0)
    rows = relu_experiments.random_relu_experiment([200], [(500,)], samples=100, tau=0.5, generator=gen)
    (row,) = rows
    assert row["flip_rate"] >= 0.8
    assert 0.05 <= row["scaled_step_median"] <= 20
    assert 0.05 <= row["scaled_step_q10"] and row["scaled_step_q90"] <= 20
    rows += relu_experiments.random_relu_experiment([50], [(500,), (200, 5, 200)], samples=50, generator=gen)
    claims = relu_experiments.summarise_claims(rows)
    assert any("widths 500:" in c and "supports the one-step flip" in c for c in claims)
    assert any("bottleneck of width 5" in c for c in claims)
    assert any("1/sqrt(d) scale" in c for c in claims)
    assert_png(relu_experiments.plot_random_relu(rows, tmp_path / "relu.png"))


def test_one_step_is_exact_on_a_linear_network():
    torch.manual_seed(0)
    linear = nn.Linear(30, 1, bias=False)
    x = geometry.sphere_points(20, 30, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.norm(dim=1), torch.full((20,), math.sqrt(30)))
    result = geometry.one_step_attack(linear, x, tau=0.2)
    assert bool(result["flipped"].all()) and float(result["linearity_error"].max()) < 1e-4
    torch.testing.assert_close(result["f_after"], -0.2 * result["f"], rtol=1e-4, atol=1e-5)


def test_spirals_compare_writes_figures_json_and_fits_the_noise(tmp_path):
    result = spirals_compare(tmp_path, small_widths=(4,), large_widths=(128, 128), n_samples=100,
                             epochs=400, label_noise=0.2, seed=0)
    assert [result[name]["widths"] for name in ("small", "large")] == [[4], [128, 128]]
    assert result["small"]["parameters"] == 2 * 4 + 4 + 4 * 2 + 2  # an MLP 2 -> 4 -> 2
    # the large MLP fits the noisy labels far better than the small one can
    assert result["large"]["train_accuracy"] >= result["small"]["train_accuracy"] + 0.15
    assert 0.0 <= result["large"]["test_accuracy"] <= 1.0
    assert result["params"]["label_noise"] == 0.2
    assert set(result["figures"]) == set(result["captions"]) == {
        "landscape_1d", "regions_small", "regions_large", "landscape_2d_small", "landscape_2d_large"}
    for name in result["figures"].values():
        assert_png(tmp_path / name)
    stored = json.loads((tmp_path / "spirals.json").read_text())
    assert stored["figures"] == result["figures"] and len(stored["small"]["curve"]["offsets"]) == 41


# --- layout: old import paths, no import circle, geometry below experiments -----------------------

def test_old_import_paths_still_work():
    import advlab.experiments as experiments

    for name in ("random_relu_sweep", "spirals_compare", "train_mlp", "random_relu_experiment",
                 "summarise_claims", "plot_random_relu"):
        with pytest.warns(DeprecationWarning, match=f"advlab.geometry.{name} moved to advlab.experiments"):
            assert getattr(geometry, name) is getattr(experiments, name)
    from advlab.geometry.lanczos import default_iterations, default_steps

    assert default_iterations is default_steps and default_steps(64, 20) == 64
    from advlab.geometry.analysis import AnalysisState, finite_median
    from advlab.geometry.analysis_state import AnalysisState as State
    from advlab.geometry.analysis_state import finite_median as median

    assert AnalysisState is State and finite_median is median
    with pytest.raises(AttributeError, match="spirals_experiment"):
        geometry.spirals_experiment  # noqa: B018 (the removed twin of spirals_compare)


def _module_imports(path) -> set[str]:
    """The advlab modules a source file imports anywhere (inside functions and TYPE_CHECKING too);
    ``from package import submodule`` counts as importing the submodule."""
    import ast

    root = Path(__file__).resolve().parents[1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("advlab"):
            folder = root.joinpath(*node.module.split("."))
            subs = {f"{node.module}.{a.name}" for a in node.names if (folder / f"{a.name}.py").exists()}
            names.update(subs or {node.module})
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("advlab"))
    return names


def test_no_import_circle_in_geometry_experiments_and_report():
    import advlab

    root = Path(advlab.__file__).parent
    modules = {}
    for package in ("geometry", "experiments", "report"):
        for path in (root / package).glob("*.py"):
            name = f"advlab.{package}" + ("" if path.stem == "__init__" else f".{path.stem}")
            modules[name] = {m for m in _module_imports(path) if m.startswith(f"advlab.{package}")}

    def visit(name: str, stack: list[str]) -> None:
        assert name not in stack, " -> ".join([*stack, name])
        for child in modules.get(name, ()):
            visit(child, [*stack, name])

    for name in modules:
        visit(name, [])
    # geometry imports downwards only: never experiments, never cli
    for path in (root / "geometry").glob("*.py"):
        upwards = {m for m in _module_imports(path) if m.startswith(("advlab.experiments", "advlab.cli"))}
        assert not upwards, (path.name, upwards)
    for path in (root / "report").glob("*.py"):
        assert not {m for m in _module_imports(path) if m.startswith("advlab.geometry")}, path.name


@pytest.mark.parametrize("code", [
    # geometry alone pulls in neither the experiments nor matplotlib; experiments come on top
    "import sys, advlab.geometry; loaded = set(sys.modules); "
    "assert not [m for m in loaded if m.startswith('advlab.experiments')] and 'matplotlib' not in loaded; "
    "import advlab.experiments",
    # the other order
    "import advlab.experiments.random_relu, advlab.experiments.story, advlab.geometry",
])
def test_fresh_imports(code):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
