"""Tests of the gradient-free attacks: Square, spatial (rotation/translation) and random noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import noise, random_noise, spatial, square
from advlab.attacks.noise import unit_sphere
from advlab.attacks.spatial import transform
from advlab.attacks.square import p_schedule
from advlab.threat import ThreatModel, lp_norm


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        raise RuntimeError("backward called on a black-box model")


class _BlackBox(nn.Module):
    """Wraps a model: refuses gradients and counts the rows of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows, self.calls = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.calls += 1
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("gradient requested from a black-box model")
        return self.model(_NoBackward.apply(x))


@pytest.fixture(scope="module")
def batch(digits):
    _, _, x_test, y_test = digits
    return x_test[:64], y_test[:64]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


# ------------------------------------------------------------------------------------- square
def test_p_schedule_halves_at_the_paper_iterations():
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 10, 10000) == 0.8 and p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 201, 10000) == 0.1
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512
    assert p_schedule(0.8, 2, 1000) == 0.4  # rescaled: iteration 2 of 1000 ~ 20 of 10000


def test_square_linf_black_box_lowers_accuracy(digits_cnn, batch):
    x, y = batch
    box = _BlackBox(digits_cnn)
    threat = ThreatModel("linf", 0.15)
    x_adv = square(box, x, y, threat, queries=300, generator=_gen())
    clean, robust = _accuracy(digits_cnn, x, y), _accuracy(digits_cnn, x_adv, y)
    assert clean > 0.9
    assert robust < 0.35, f"square linf eps=0.15 left {robust:.2f} accuracy (measured ~0.06)"
    assert bool(threat.contains(x, x_adv).all())
    assert box.rows <= len(x) * 301  # the query budget, counted in samples


def test_square_query_budget_and_early_exit(digits_cnn, batch):
    x, y = batch
    correct = digits_cnn(x).argmax(dim=1) == y
    x, y = x[correct][:16], y[correct][:16]
    box = _BlackBox(digits_cnn)
    square(box, x, y, ThreatModel("linf", 1e-4), queries=25, generator=_gen())
    assert box.rows == len(x) * (25 + 1)  # nobody fooled: exactly clean pass + queries each
    box.rows = 0
    info = square(box, x, y, ThreatModel("l2", 4.0), queries=25, restarts=2, generator=_gen(),
                  return_info=True)
    assert box.rows - len(x) < len(x) * (25 + 1)  # fooled samples are no longer queried
    # per-sample queries: every forward a sample took part in (not the return_info check)
    assert info.queries.dtype == torch.int64 and int(info.queries.sum()) == box.rows - len(x)
    assert int(info.queries.max()) <= 2 * 25 + 1 and (info.queries[info.success] < 2 * 25 + 1).all()


@pytest.mark.parametrize("shape", [(6, 1, 6, 6), (6, 36)])
def test_square_l2_stays_on_the_sphere(shape):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    x = 0.4 + 0.2 * torch.rand(*shape)
    y = model(x).argmax(dim=1)
    threat = ThreatModel("l2", 0.2)
    x_adv = square(model, x, y, threat, queries=40, p_init=0.3, generator=_gen())
    norms = lp_norm(x_adv - x, "l2")
    assert bool((norms <= 0.2 * (1 + 1e-5)).all())
    fooled = model(x_adv).argmax(dim=1) != y
    # no clipping happens here, so every search point has ||delta||_2 = eps exactly
    assert torch.allclose(norms[~fooled], torch.full_like(norms[~fooled], 0.2), atol=1e-5)


def test_square_l2_lowers_accuracy(digits_cnn, batch):
    x, y = batch
    x_adv = square(digits_cnn, x, y, ThreatModel("l2", 1.0), queries=150, p_init=0.3, generator=_gen())
    assert _accuracy(digits_cnn, x_adv, y) < _accuracy(digits_cnn, x, y) - 0.3


def test_square_is_reproducible(digits_cnn, batch):
    x, y = batch[0][:16], batch[1][:16]
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        threat = ThreatModel(norm, eps)
        first = square(digits_cnn, x, y, threat, queries=20, generator=_gen(3))
        assert torch.equal(first, square(digits_cnn, x, y, threat, queries=20, generator=_gen(3)))
        assert not torch.equal(first, square(digits_cnn, x, y, threat, queries=20, generator=_gen(4)))


def test_square_bad_options(tiny_model):
    x, y = torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="queries"):
        square(tiny_model, x, y, ThreatModel("linf", 0.1), queries=0)
    with pytest.raises(ValueError, match="p_init"):
        square(tiny_model, x, y, ThreatModel("linf", 0.1), p_init=0.0)
    with pytest.raises(ValueError, match="unknown loss"):
        square(tiny_model, x, y, ThreatModel("linf", 0.1), loss="nope")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        square(tiny_model, torch.rand(2, 1, 1, 4, 4), y, ThreatModel("linf", 0.1))


# ------------------------------------------------------------------------------------ spatial
def test_transform_identity_rotation_and_translation():
    x = torch.rand(3, 2, 6, 6, generator=_gen())
    assert torch.allclose(transform(x, 0.0, 0.0, 0.0), x, atol=1e-6)
    assert torch.allclose(transform(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(transform(x, -90.0), torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(transform(x, 180.0), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5)
    # one pixel right (tx = 1/W) and down (ty = 1/H), zeros come in from the border
    shifted = torch.zeros_like(x)
    shifted[:, :, 1:, 1:] = x[:, :, :-1, :-1]
    assert torch.allclose(transform(x, 0.0, 1 / 6, 1 / 6), shifted, atol=1e-5)
    # per-sample parameters
    angles = torch.tensor([0.0, 90.0, 180.0])
    out = transform(x, angles)
    for i, k in enumerate((0, 1, 2)):
        assert torch.allclose(out[i], torch.rot90(x[i], k, dims=(1, 2)), atol=1e-5)


def test_spatial_lowers_accuracy_and_stays_in_bounds(digits_cnn, batch):
    x, y = batch
    box = _BlackBox(digits_cnn)
    result = spatial(box, x, y, max_rotation=20.0, max_translation=0.125, batch_size=8192,
                     return_info=True)
    x_adv, info = result.x_adv, result.extras
    assert box.calls <= 3  # clean check, the 125-point grid in one batched pass, the info pass
    assert _accuracy(digits_cnn, x_adv, y) < 0.5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0 and x_adv.shape == x.shape
    assert set(info) >= {"angle", "tx", "ty", "loss"}
    assert bool((info["angle"].abs() <= 20.0).all()) and bool((info["tx"].abs() <= 0.125 + 1e-6).all())
    with torch.no_grad():
        assert torch.equal(result.success, digits_cnn(x_adv).argmax(dim=1) != y)
    assert torch.allclose(x_adv, transform(x, info["angle"], info["tx"], info["ty"]), atol=1e-6)
    correct = ~(digits_cnn(x).argmax(dim=1) != y)
    assert (result.queries[correct] == 1 + 125).all() and (result.queries[~correct] == 1).all()


def test_spatial_random_search_is_reproducible(digits_cnn, batch):
    x, y = batch[0][:16], batch[1][:16]
    first = spatial(digits_cnn, x, y, grid=None, random_samples=8, generator=_gen(1))
    assert torch.equal(first, spatial(digits_cnn, x, y, grid=None, random_samples=8, generator=_gen(1)))


def test_spatial_then_lp_perturbation(digits_cnn, batch):
    x, y = batch[0][:32], batch[1][:32]
    threat = ThreatModel("linf", 0.05)
    result = spatial(digits_cnn, x, y, threat, max_rotation=10.0, max_translation=0.0,
                     grid=(3, 1, 1), lp_steps=5, return_info=True)
    x_adv, info = result.x_adv, result.extras
    assert (result.gradients == 5).all()  # the PGD passes (no early stop)
    x_t = transform(x, info["angle"], info["tx"], info["ty"])
    assert bool(threat.contains(x_t, x_adv).all())
    spatial_only = spatial(digits_cnn, x, y, max_rotation=10.0, max_translation=0.0, grid=(3, 1, 1))
    assert _accuracy(digits_cnn, x_adv, y) <= _accuracy(digits_cnn, spatial_only, y)


def test_spatial_bad_input(tiny_model):
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="images"):
        spatial(tiny_model, torch.rand(2, 16), y)
    with pytest.raises(ValueError, match="nothing to search"):
        spatial(tiny_model, torch.rand(2, 1, 4, 4), y, grid=None)
    with pytest.raises(ValueError, match="max_translation"):
        spatial(tiny_model, torch.rand(2, 1, 4, 4), y, max_translation=2.0)


# -------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_random_noise_norms(norm):
    x = 0.45 + 0.1 * torch.rand(8, 3, 5, 5, generator=_gen())
    for distribution in ("gaussian", "sphere"):
        delta = random_noise(x, norm, 0.05, distribution=distribution, generator=_gen(1)) - x
        assert torch.allclose(lp_norm(delta, norm), torch.full((8,), 0.05), rtol=1e-4)
    ball = random_noise(x, norm, 0.05, distribution="ball", generator=_gen(1)) - x
    assert bool((lp_norm(ball, norm) <= 0.05 * (1 + 1e-5)).all())
    sphere = unit_sphere(500, 7, norm, generator=_gen(2))
    assert torch.allclose(lp_norm(sphere, norm), torch.ones(500), atol=1e-5)


def test_random_noise_cube_and_errors():
    x = torch.full((4, 100), 0.5)
    eps = torch.tensor([0.0, 0.1, 0.2, 0.3])
    delta = random_noise(x, "linf", eps, distribution="cube", generator=_gen()) - x
    assert bool((delta.abs().amax(dim=1) <= eps + 1e-7).all())
    assert delta[3].abs().amax() > 0.25 and delta[3].abs().mean() < 0.2  # spread inside the cube
    with pytest.raises(ValueError, match="cube"):
        random_noise(x, "l2", 0.1, distribution="cube")
    with pytest.raises(ValueError, match="unknown distribution"):
        random_noise(x, "l2", 0.1, distribution="laplace")


def test_noise_attack(digits_cnn, batch):
    x, y = batch
    threat = ThreatModel("l2", 2.5)
    x_adv = noise(digits_cnn, x, y, threat, samples=10, generator=_gen())
    assert bool(threat.contains(x, x_adv).all())
    assert _accuracy(digits_cnn, x_adv, y) < _accuracy(digits_cnn, x, y)
    assert torch.equal(x_adv, noise(digits_cnn, x, y, threat, samples=10, generator=_gen()))
    # the random-noise baseline is much weaker than the Square attack at the same radius
    small = ThreatModel("linf", 0.15)
    assert _accuracy(digits_cnn, noise(digits_cnn, x, y, small, generator=_gen()), y) > 0.6
