"""Gradient attacks FGSM/FGM, PGD and APGD: strength, differential checks, cost and options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import apgd, fgm, fgsm, get_attack, pgd
from advlab.attacks.apgd import checkpoints
from advlab.attacks.losses import ce_loss

N_POINTS = 200


class Counting(nn.Module):
    """Wraps a model and counts forward calls and forwarded rows."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls, self.rows, self.sizes = inner, 0, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        self.sizes.append(x.shape[0])
        return self.inner(x)


@pytest.fixture(scope="module")
def points(digits) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return x_test[:N_POINTS], y_test[:N_POINTS]


@pytest.fixture(params=["digits_mlp", "digits_cnn"])
def model(request) -> nn.Module:
    return request.getfixturevalue(request.param)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) != y


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- strength
# Measured on 200 digits (clean accuracy 0.975 MLP / 0.955 CNN): linf 0.1 -> fgsm 0.49/0.40,
# pgd-10 0.43/0.35, apgd 0.42-0.45/0.36-0.39; l2 0.75 -> fgsm 0.30/0.21, pgd-10 0.08/0.10,
# apgd-ce 0.08/0.09, apgd-dlr 0.11/0.13. Thresholds leave a wide margin.
STRENGTH = {"linf": (0.1, 0.62, 0.52, 0.55), "l2": (0.75, 0.45, 0.2, 0.25)}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attacks_drop_accuracy_far_below_clean(model: nn.Module, points, norm: str) -> None:
    x, y = points
    eps, fgsm_max, pgd_max, apgd_max = STRENGTH[norm]
    threat = ThreatModel(norm, eps)
    assert accuracy(model, x, y) > 0.93
    acc_fgsm = accuracy(model, fgsm(model, x, y, threat), y)
    acc_pgd10 = accuracy(model, pgd(model, x, y, threat, steps=10), y)
    acc_pgd20 = accuracy(model, pgd(model, x, y, threat, steps=20), y)
    acc_apgd_ce = accuracy(model, apgd(model, x, y, threat, loss="ce", generator=seeded()), y)
    acc_apgd_dlr = accuracy(model, apgd(model, x, y, threat, loss="dlr", generator=seeded()), y)
    assert acc_fgsm < fgsm_max
    assert max(acc_pgd10, acc_pgd20) < pgd_max
    assert max(acc_apgd_ce, acc_apgd_dlr) < apgd_max
    assert acc_pgd20 <= acc_fgsm
    # APGD-CE is at least as strong as PGD-10 up to a few points (on these small models PGD from
    # the clean point is already near-optimal; the reference APGD behaves the same).
    assert acc_apgd_ce <= acc_pgd10 + 0.025


def test_fgm_is_fgsm_under_l2(digits_mlp: nn.Module, points) -> None:
    x, y = points
    threat = ThreatModel("l2", 0.5)
    x_adv = fgm(digits_mlp, x, y, threat)
    assert fgm is fgsm and get_attack("fgm") is fgsm
    req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ce_loss(digits_mlp(req), y).sum(), req)
    unit = grad / grad.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_adv, (x + 0.5 * unit).clamp(0, 1), atol=1e-6, rtol=0)
    assert accuracy(digits_mlp, x_adv, y) < 0.8


def test_targeted_pgd_reaches_the_target(model: nn.Module, points) -> None:
    x, y = points
    target = (y + 1) % 10
    y_before = y.clone()
    info = pgd(model, x, y, ThreatModel("linf", 0.3), steps=20, target=target, return_info=True)
    assert torch.equal(y, y_before)
    assert accuracy(model, info.x_adv, target) > 0.9  # measured 0.995 / 1.0
    with torch.no_grad():
        assert torch.equal(info.success, model(info.x_adv).argmax(dim=1) == target)


def test_targeted_fgsm_moves_towards_the_target(digits_mlp: nn.Module, points) -> None:
    x, y = points
    target = (y + 1) % 10
    x_adv = fgsm(digits_mlp, x, y, ThreatModel("linf", 0.1), target=target)
    with torch.no_grad():
        assert (ce_loss(digits_mlp(x_adv), target) < ce_loss(digits_mlp(x), target)).float().mean() > 0.95


@pytest.mark.parametrize("loss", ["dlr", "ce"])
def test_targeted_apgd_fools_most_points(model: nn.Module, points, loss: str) -> None:
    x, y = points
    threat = ThreatModel("linf", 0.1)
    x_adv = apgd(model, x, y, threat, loss=loss, target="top", steps=20, n_target_classes=3,
                 generator=seeded())
    assert threat.contains(x, x_adv).all()
    assert accuracy(model, x_adv, y) < 0.5  # measured 0.42 / 0.34; y is the TRUE label here


@pytest.mark.parametrize("loss", ["dlr", "ce"])
def test_apgd_top_sweep_is_the_old_targeted_apgd(digits_mlp: nn.Module, points, loss: str) -> None:
    """``target="top"`` is what ``targeted=True`` did in advlab 0.1: on this fixed seed 0.1 left
    85 of the 200 points correctly classified (computed once with the 0.1 code), the same
    points as ``n_target_classes`` top classes tried one after the other by hand below."""
    x, y = points
    threat = ThreatModel("linf", 0.1)
    info = apgd(digits_mlp, x, y, threat, loss=loss, target="top", steps=20, n_target_classes=3,
                generator=seeded(), return_info=True)
    assert int((~info.success).sum()) == 85
    with torch.no_grad():
        assert torch.equal(info.success, digits_mlp(info.x_adv).argmax(dim=1) != y)  # success = misclassified
    assert int(info.gradients.max()) <= 3 * 20  # at most 3 ranks of 20 steps (the last without gradient)


def test_targeted_keyword_is_gone(digits_mlp: nn.Module, points) -> None:
    x, y = points[0][:4], points[1][:4]
    for attack in (fgsm, pgd, apgd):
        with pytest.raises(TypeError, match="targeted= was removed.*target="):
            attack(digits_mlp, x, y, ThreatModel("linf", 0.1), targeted=True)


# ------------------------------------------------------------------------------- DLR needs classes
def _two_class_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


def test_dlr_on_two_classes_raises_before_any_work(points) -> None:
    x, y = points
    x, y = x[:8], (y[:8] % 2)
    counting = Counting(_two_class_model())
    with pytest.raises(ValueError, match="at least 3 classes"):
        apgd(counting, x, y, ThreatModel("linf", 0.1), loss="dlr")
    assert counting.calls == 1  # only the clean forward pass of the input checks
    with pytest.raises(ValueError, match="at least 3 classes"):
        pgd(counting, x, y, ThreatModel("linf", 0.1), loss="dlr")
    assert counting.calls == 2


def test_targeted_dlr_needs_four_classes(points) -> None:
    x, y = points
    torch.manual_seed(0)
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match="targeted DLR loss needs at least 4 classes"):
        apgd(three, x[:4], y[:4] % 3, ThreatModel("linf", 0.1), loss="dlr", target="top")
    # untargeted DLR with 3 classes is fine
    apgd(three, x[:4], y[:4] % 3, ThreatModel("linf", 0.1), loss="dlr", steps=3)


# ------------------------------------------------------------------------------- differential
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_one_step_of_eps_equals_fgsm(model: nn.Module, points, norm: str, eps: float) -> None:
    x, y = points
    threat = ThreatModel(norm, eps)
    x_fgsm = fgsm(model, x, y, threat)
    x_pgd = pgd(model, x, y, threat, steps=1, step_size=eps, random_start=False)
    # pgd keeps the best of {x, x_1}; the two agree because FGSM raises the loss of every point
    # here (where it did not, pgd would rightly return x).
    with torch.no_grad():
        assert (ce_loss(model(x_fgsm), y) >= ce_loss(model(x), y)).all()
    assert torch.equal(x_pgd, x_fgsm)


def test_early_stop_same_success_fewer_rows(digits_cnn: nn.Module, points) -> None:
    x, y = points
    threat = ThreatModel("linf", 0.1)
    full, early = Counting(digits_cnn), Counting(digits_cnn)
    x_full = pgd(full, x, y, threat, steps=20)
    x_early = pgd(early, x, y, threat, steps=20, early_stop=True)
    n_full, n_early = fooled(digits_cnn, x_full, y).sum(), fooled(digits_cnn, x_early, y).sum()
    # trajectories of unfooled samples are the same; allow one sample for batch-size round-off
    assert n_early >= n_full - 1
    assert full.calls == 20 + 1  # 20 gradient passes (the first scores the clean point), final iterate
    assert full.sizes[-1] < len(x)  # ... scored only where no step has fooled the sample
    assert early.calls <= full.calls and early.rows < 0.75 * full.rows


def test_gradient_counts_follow_early_stop(digits_cnn: nn.Module, points) -> None:
    """``gradients`` counts the gradient passes each sample took part in: all ``steps`` without
    early stop, fewer for the samples fooled early with it (their rows leave the batch)."""
    x, y = points
    threat = ThreatModel("linf", 0.1)
    full = pgd(digits_cnn, x, y, threat, steps=20, return_info=True)
    assert full.gradients.dtype == torch.int64 and (full.gradients == 20).all()
    counting = Counting(digits_cnn)
    early = pgd(counting, x, y, threat, steps=20, early_stop=True, return_info=True)
    assert int(early.gradients.min()) >= 1 and int(early.gradients.max()) == 20
    # the 20 gradient passes, then the last-iterate check and the fresh forward of return_info
    # (a forward pass through ``predict`` runs in chunks on CPU, so count rows, not calls)
    passes, forwards = counting.sizes[:20], counting.sizes[20:]
    assert int(early.gradients.sum()) == sum(passes) and passes[0] == len(x)
    assert len(x) < sum(forwards) <= 2 * len(x)
    assert (early.gradients[early.success] < 20).any()
    apgd_info = apgd(digits_cnn, x, y, threat, steps=10, generator=seeded(), return_info=True)
    assert int(apgd_info.gradients.max()) <= 10
    assert (apgd_info.gradients[fooled(digits_cnn, x, y)] == 0).all()  # wrong to begin with: no work


def test_pgd_scores_the_last_iterate_only_where_no_iterate_fooled(digits_cnn: nn.Module, points) -> None:
    """The final forward pass runs on the samples that no step has fooled yet (and on clean
    points that were misclassified from the start), so it is nearly free on a weak model."""
    x, y = points
    counting = Counting(digits_cnn)
    x_adv = pgd(counting, x, y, ThreatModel("linf", 0.1), steps=20)
    assert counting.sizes[:20] == [len(x)] * 20  # no early stop: every step on every sample
    last = counting.sizes[20] if len(counting.sizes) > 20 else 0
    still_robust = int((~fooled(digits_cnn, x_adv, y)).sum())
    assert still_robust <= last < len(x) // 2
    # a sample whose last iterate is the only fooling one is still found: compare with a
    # reference loop that scores every iterate on every sample
    assert fooled(digits_cnn, x_adv, y).sum() == fooled(digits_cnn, _reference_pgd(digits_cnn, x, y), y).sum()


def test_pgd_skips_the_final_pass_when_every_sample_is_fooled(digits_mlp: nn.Module, points) -> None:
    x, y = points
    counting = Counting(digits_mlp)
    x_adv = pgd(counting, x[:20], y[:20], ThreatModel("l2", 3.0), steps=30)
    assert fooled(digits_mlp, x_adv, y[:20]).all()
    assert counting.calls == 30


def _reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.1,
                   steps: int = 20) -> torch.Tensor:
    """Textbook Linf PGD returning, per sample, the first fooling iterate (the last if none)."""
    x_adv, found = x.clone(), x.clone()
    done = torch.zeros(len(x), dtype=torch.bool)
    for k in range(steps + 1):
        x_req = x_adv.clone().requires_grad_(True)
        logits = model(x_req)
        new = (logits.argmax(1) != y) & ~done
        found[new], done = x_adv[new], done | new
        if k == steps:
            break
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), x_req)
        x_adv = (x + (x_adv + 2.5 * eps / steps * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return torch.where(done[:, None, None, None], found, x_adv)


def test_early_stop_returns_when_all_fooled(digits_mlp: nn.Module, points) -> None:
    x, y = points
    counting = Counting(digits_mlp)
    x_adv = pgd(counting, x[:20], y[:20], ThreatModel("l2", 3.0), steps=50, early_stop=True)
    assert fooled(digits_mlp, x_adv, y[:20]).all()
    assert counting.calls <= 12  # 8 steps instead of 50 (measured 10 calls)


def test_apgd_cost_and_early_stop(digits_mlp: nn.Module, points) -> None:
    x, y = points
    threat = ThreatModel("linf", 0.1)
    full, early = Counting(digits_mlp), Counting(digits_mlp)
    x_full = apgd(full, x, y, threat, steps=30, early_stop=False, generator=seeded())
    x_early = apgd(early, x, y, threat, steps=30, generator=seeded())
    assert full.calls == 30 + 2  # clean pass, start point, 30 iterates (the last without gradient)
    assert early.rows < 0.75 * full.rows
    assert abs(int(fooled(digits_mlp, x_early, y).sum()) - int(fooled(digits_mlp, x_full, y).sum())) <= 4


# ------------------------------------------------------------------------------- best iterate
class Periodic(nn.Module):
    """Two-class model whose loss oscillates along the input diagonal: big steps overshoot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = 3.0 * x.flatten(1).sum(dim=1)  # (B,)
        return torch.stack([torch.sin(u), -torch.sin(u)], dim=1) * 3


def test_pgd_never_returns_worse_than_its_start() -> None:
    model, threat, step_size = Periodic(), ThreatModel("linf", 0.08), 0.15
    x = torch.rand(200, 8, generator=seeded(0))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    start = threat.random_init(x, generator=seeded(5))  # the start pgd draws with the same generator
    x_adv = pgd(model, x, y, threat, steps=4, step_size=step_size, random_start=True, generator=seeded(5))
    last = start  # plain PGD (last iterate) from the same start
    for _ in range(4):
        req = last.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ce_loss(model(req), y).sum(), req)
        last = threat.project(x, threat.step(last, grad, step_size))
    with torch.no_grad():
        loss_start, loss_last, loss_adv = (ce_loss(model(t), y) for t in (start, last, x_adv))
    assert ((loss_last < loss_start) & ~fooled(model, last, y)).sum() > 20  # the trap is real
    kept = ~fooled(model, x_adv, y)
    assert kept.sum() >= 5
    assert (loss_adv[kept] >= loss_start[kept] - 1e-6).all()
    assert fooled(model, x_adv, y).sum() >= fooled(model, last, y).sum()


def test_restarts_only_add_successes(digits_cnn: nn.Module, points) -> None:
    x, y = points
    threat = ThreatModel("linf", 0.08)
    one = pgd(digits_cnn, x, y, threat, steps=5, random_start=True, generator=seeded(1))
    three = pgd(digits_cnn, x, y, threat, steps=5, random_start=True, restarts=3, generator=seeded(1))
    fooled_one, fooled_three = fooled(digits_cnn, one, y), fooled(digits_cnn, three, y)
    assert (fooled_three | ~fooled_one).all()  # every success of one run survives
    # restarts beyond the first use random starts even without random_start
    plain = pgd(digits_cnn, x, y, threat, steps=5, restarts=2, generator=seeded(1))
    assert fooled(digits_cnn, plain, y).sum() >= fooled(digits_cnn, pgd(digits_cnn, x, y, threat, steps=5), y).sum()


def test_per_sample_eps_and_zero_eps(digits_mlp: nn.Module, points) -> None:
    x, y = points[0][:6], points[1][:6]
    eps = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.0, 0.3])
    threat = ThreatModel("linf", eps)
    for attack in (fgsm, pgd, apgd):
        x_adv = attack(digits_mlp, x, y, threat)
        dist = threat.distance(x, x_adv)
        assert torch.equal(x_adv[eps == 0], x[eps == 0])
        assert (dist <= eps + 1e-6).all() and (dist[eps > 0] > 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pgd_scalar_and_per_sample_step_sizes_agree(digits_mlp: nn.Module, points, norm: str) -> None:
    """One step size for the batch runs as a scalar kernel; a (B,) tensor of the same value as a
    broadcast one. Both must give the same iterates bit for bit, with and without early stop."""
    x, y = points[0][:40], points[1][:40]
    threat = ThreatModel(norm, {"linf": 0.1, "l2": 0.75, "l1": 3.0}[norm])
    step = {"linf": 0.03, "l2": 0.2, "l1": 1.0}[norm]
    for early_stop in (False, True):
        scalar = pgd(digits_mlp, x, y, threat, steps=6, step_size=step, early_stop=early_stop)
        tensor = pgd(digits_mlp, x, y, threat, steps=6, step_size=torch.full((40,), step), early_stop=early_stop)
        assert torch.equal(scalar, tensor)
    # the default 2.5 eps / steps, as a float for a float eps and per sample for a (B,) eps
    per_sample = ThreatModel(norm, torch.full((40,), float(threat.eps)))
    assert torch.equal(pgd(digits_mlp, x, y, threat, steps=4), pgd(digits_mlp, x, y, per_sample, steps=4))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_all_norms_inside_threat(digits_mlp: nn.Module, points, norm: str) -> None:
    x, y = points[0][:50], points[1][:50]
    threat = ThreatModel(norm, {"linf": 0.1, "l2": 0.75, "l1": 3.0}[norm])
    clean = accuracy(digits_mlp, x, y)
    for x_adv in (fgsm(digits_mlp, x, y, threat), pgd(digits_mlp, x, y, threat, loss="cw"),
                  apgd(digits_mlp, x, y, threat, steps=20, generator=seeded())):
        assert threat.contains(x, x_adv).all()
        assert accuracy(digits_mlp, x_adv, y) < clean - 0.2


# ------------------------------------------------------------------------------- options
def test_apgd_checkpoints_follow_the_paper() -> None:
    assert list(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(100)[41] == 19 and checkpoints(100)[99] == 6
    assert max(checkpoints(7)) <= 7 and all(v >= 1 for v in checkpoints(7).values())


@pytest.mark.parametrize("attack,options,match", [
    (pgd, {"steps": 0}, "steps must be an integer >= 1"),
    (pgd, {"restarts": 0}, "restarts must be"),
    (pgd, {"step_size": -0.1}, "step_size must be finite and non-negative"),
    (pgd, {"loss": "hinge"}, "unknown loss"),
    (apgd, {"steps": 0}, "steps must be"),
    (apgd, {"rho": 1.5}, "rho must lie in"),
    (apgd, {"momentum": -0.1}, "momentum must lie in"),
    (apgd, {"n_target_classes": 0, "target": "top"}, "n_target_classes must be"),
    (apgd, {"target": "all"}, "target must be None, a"),
    (apgd, {"loss": "hinge"}, "unknown loss"),
    (fgsm, {"loss": "hinge"}, "unknown loss"),
])
def test_bad_options(tiny_model: nn.Module, attack, options: dict, match: str) -> None:
    x = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match=match):
        attack(tiny_model, x, torch.tensor([0, 1, 2]), ThreatModel("linf", 0.1), **options)



def test_apgd_stops_on_points_with_exactly_zero_gradient(digits_mlp: nn.Module, points) -> None:
    """A sample whose gradient at the start is exactly zero can never move: APGD spends no more
    passes on it (quantised inputs: the gradient is zero everywhere)."""

    class Quantized(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return digits_mlp(torch.round(x * 4) / 4)

    x, y = points[0][:40], points[1][:40]
    counting = Counting(Quantized())
    threat = ThreatModel("linf", 0.03)
    x_adv = apgd(counting, x, y, threat, steps=30, restarts=2,
                 generator=torch.Generator().manual_seed(0))
    # per run: one pass at the random start on the robust rows, nothing after it
    assert counting.rows <= 40 + 2 * 40
    assert torch.all(threat.contains(x, x_adv))
    # the plain model still gets the full budget
    counting = Counting(digits_mlp)
    apgd(counting, x, y, threat, steps=30, generator=torch.Generator().manual_seed(0))
    assert counting.calls > 10


def test_apgd_target_patience_stops_after_empty_ranks(digits_mlp: nn.Module, points) -> None:
    x, y = points[0][:60], points[1][:60]
    threat = ThreatModel("linf", 0.002)  # too small to break anything: every rank comes back empty
    runs = {}
    for patience in (None, 2):
        counting = Counting(digits_mlp)
        x_adv = apgd(counting, x, y, threat, loss="dlr", target="top", n_target_classes=9,
                     steps=10, target_patience=patience, generator=torch.Generator().manual_seed(0))
        runs[patience] = (counting.rows, x_adv)
    assert runs[2][0] < 0.3 * runs[None][0]  # 2 of 9 ranks
    assert torch.equal(fooled(digits_mlp, runs[2][1], y), fooled(digits_mlp, runs[None][1], y))
    with pytest.raises(ValueError, match="target_patience"):
        apgd(digits_mlp, x, y, threat, target="top", target_patience=0)


# ------------------------------------------------------------------ APGD-L1 (Croce & Hein 2021)
def test_l1_sparse_step_skips_coordinates_stuck_on_the_box() -> None:
    from advlab.attacks.apgd_l1 import sparse_direction

    x_adv = torch.tensor([[1.0, 0.0, 0.5, 0.5]])
    grad = torch.tensor([[5.0, -4.0, 1.0, -0.5]])  # the two largest push outwards: cannot move
    direction = sparse_direction(grad, x_adv, torch.tensor([0.5]), (0.0, 1.0))
    assert direction[0, :2].abs().sum() == 0
    assert torch.allclose(direction, torch.tensor([[0.0, 0.0, 0.5, -0.5]]))


def test_apgd_l1_is_stronger_than_the_plain_sparse_step(digits_cnn: nn.Module, points) -> None:
    x, y = points[0][:100], points[1][:100]
    threat = ThreatModel("l1", 1.0)
    plain = pgd(digits_cnn, x, y, threat, steps=100, step_size=0.5, loss="ce")
    x_adv = apgd(digits_cnn, x, y, threat, steps=100, generator=seeded())
    assert threat.contains(x, x_adv).all()
    assert fooled(digits_cnn, x_adv, y).sum() >= fooled(digits_cnn, plain, y).sum()
    larger = apgd(digits_cnn, x, y, threat, steps=30, large_eps=True, generator=seeded())
    assert threat.contains(x, larger).all()  # the 3 eps and 2 eps stages never leak out
    assert fooled(digits_cnn, larger, y).sum() > 0
