"""N-FGSM (de Jorge et al. 2022) and GradAlign (Andriushchenko & Flammarion 2020) in the fit loop:
their perturbations, robustness over standard training on held-out digits, exact resume, the
catastrophic-overfitting watch and 2-process torchrun."""

from __future__ import annotations

import pytest
import torch
from harness import Crash, run_torchrun
from weights import assert_same_weights, snapshot

from advlab import ThreatModel
from advlab.attacks import pgd
from advlab.models import create_model
from advlab.training import OBJECTIVES, fit, get_objective, load_checkpoint, watches_collapse
from advlab.training.defenses.fast import grad_align_lambda

EPS = 0.1
FAST = {"n-fgsm": {"eps": EPS, "check_size": 64}, "grad-align": {"eps": EPS, "check_size": 64}}


def _mlp(seed: int = 0):
    return create_model("mlp", 10, (1, 8, 8), widths=(64,), seed=seed)


def _pgd_accuracy(model, x, y) -> float:
    """Accuracy under a fixed PGD (20 steps of eps/4, random start, seeded) on held-out points."""
    threat = ThreatModel("linf", EPS)
    x_adv = pgd(model, x, y, threat, steps=20, step_size=EPS / 4, random_start=True,
                generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(x_adv).argmax(dim=1) == y).float().mean().item()


def test_registered_with_the_papers_defaults():
    assert {"n-fgsm", "grad-align"} <= set(OBJECTIVES.names())
    nfgsm = get_objective("n-fgsm").function
    assert (nfgsm.noise_ratio, nfgsm.step_ratio, nfgsm.clip_ratio) == (2.0, 1.0, None)
    align = get_objective("grad-align", eps=8 / 255).function
    assert align.lam == pytest.approx(0.2) and align.step_ratio == 1.0 and not align.random_start
    assert get_objective("grad-align", eps=0.1).function.lam == pytest.approx(grad_align_lambda(0.1))
    assert get_objective("grad-align", lam=0.5).function.lam == 0.5
    assert all(watches_collapse(get_objective(name)) for name in FAST)
    assert not watches_collapse(get_objective("n-fgsm", check=False))
    with pytest.raises(ValueError, match="noise_ratio"):
        get_objective("n-fgsm", noise_ratio=-1.0)
    with pytest.raises(ValueError, match="'grad-align' takes the parameters"):
        get_objective("grad-align", beta=1.0)


def test_nfgsm_perturbation_is_not_clipped_to_the_ball(digits):
    x, y = digits[0][:256], digits[1][:256]
    defense = get_objective("n-fgsm", eps=EPS).function
    x_adv = defense.attack(_mlp(), x, y, progress=1.0)
    delta = (x_adv - x).abs().flatten(1).amax(dim=1)
    assert float(delta.max()) <= 3 * EPS + 1e-6 and float(delta.max()) > 1.5 * EPS  # (k+1) eps
    assert x_adv.min() >= 0 and x_adv.max() <= 1  # the box only
    clipped = get_objective("n-fgsm", eps=EPS, clip_ratio=1.0).function
    assert ThreatModel("linf", EPS).contains(x, clipped.attack(_mlp(), x, y, 1.0)).all()


def test_grad_align_penalty_is_one_minus_the_cosine(digits):
    x, y = digits[0][:64], digits[1][:64]
    model = _mlp()
    plain = get_objective("grad-align", eps=EPS, lam=0.0)
    aligned = get_objective("grad-align", eps=EPS, lam=1.0)
    loss_plain, loss_aligned = plain(model, x, y).loss, aligned(model, x, y).loss
    cosine = aligned.function.cosine.pop()  # same generator seed: the same FGSM point
    assert -1.0 <= cosine <= 1.0
    assert float((loss_aligned - loss_plain).detach()) == pytest.approx(1.0 - cosine, abs=1e-5)
    model.zero_grad()
    loss_aligned.backward()  # double backprop reaches the weights
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.fixture(scope="module")
def trained(digits):
    x_tr, y_tr = digits[0], digits[1]
    models = {}
    for name, params in {"none": {}, **FAST}.items():
        result = fit(_mlp(), (x_tr, y_tr), objective=get_objective(name, **params), epochs=5,
                     batch_size=64, lr=1e-2, progress=False)
        models[name] = result
    return models


@pytest.mark.parametrize("name", list(FAST))
def test_fast_defenses_beat_standard_training(trained, digits, name):
    x_te, y_te = digits[2], digits[3]
    robust = _pgd_accuracy(trained[name].model, x_te, y_te)
    baseline = _pgd_accuracy(trained["none"].model, x_te, y_te)
    # 400 held-out points: a gap of 0.1 is far outside the sampling noise (sd < 0.035)
    assert robust > baseline + 0.1, (robust, baseline)
    history = trained[name].history
    assert "probe_pgd_acc" in history[-1] and not trained[name].events  # the watch ran, no collapse
    if name == "grad-align":
        assert 0.0 < history[-1]["grad_cosine"] <= 1.0


@pytest.mark.parametrize("name", list(FAST))
def test_resume_after_a_kill_repeats_the_run(digits, tmp_path, name):
    x_tr, y_tr = digits[0][:320], digits[1][:320]

    def objective(at=None):
        return Crash(get_objective(name, **FAST[name]), at)

    options = dict(epochs=2, batch_size=32, lr=1e-2, progress=False, checkpoint_every=3)
    reference = fit(_mlp(), (x_tr, y_tr), objective=objective(), **options)
    with pytest.raises(KeyboardInterrupt):  # 10 steps per epoch: dies at step 4 of epoch 2
        fit(_mlp(), (x_tr, y_tr), objective=objective(at=14), run_dir=tmp_path, **options)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["objective"][0]["step"] == 12
    resumed = fit(_mlp(seed=3), (x_tr, y_tr), objective=objective(), run_dir=tmp_path,
                  resume=True, **options)
    assert_same_weights(snapshot(resumed.model), snapshot(reference.model))
    for got, want in zip(resumed.history, reference.history, strict=True):
        for key in ("train_loss", "train_adv_acc", "probe_pgd_acc", "grad_cosine"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-6), key


@pytest.mark.parametrize("name", list(FAST))
def test_collapse_watch_rolls_back_and_lowers_the_step(digits, name):
    """The watch of fgsm-rs drives the rollback: a collapse reported after epoch 2 rolls back
    to epoch 1 and redoes epoch 2 with 0.8 x the step; the probe's training attack stays in the
    threat model (N-FGSM's own perturbation does not)."""
    objective = get_objective(name, **FAST[name])
    watch = objective.function.watch
    original, inside = watch.check, []

    def check(model, threat, generator, train_attack):
        metrics, collapse = original(model, threat, generator, train_attack)
        x = watch.probe_x
        inside.append(bool(threat.contains(x, train_attack(x, watch.probe_y)).all()))
        return metrics, ("forced collapse" if len(inside) == 2 else collapse)

    watch.check = check
    result = fit(_mlp(), (digits[0][:320], digits[1][:320]), objective=objective, epochs=3,
                 batch_size=64, lr=1e-2, progress=False)
    (event,) = result.events
    assert (event["event"], event["epoch"], event["rolled_back_to"]) == (
        "catastrophic_overfitting", 2, 1)
    assert event["action"].startswith(f"lowered the step size to {0.8 * EPS:.4g}")
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and all(inside) and len(inside) == 4
    assert result.history[2]["step_size"] == pytest.approx(0.8 * EPS)


_DDP_SCRIPT = """
import os, sys, torch, torch.distributed as dist
from sklearn.datasets import load_digits
from advlab.models import create_model
from advlab.training import fit, get_objective
torch.set_num_threads(1)
dist.init_process_group("gloo")
bunch = load_digits()
x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
y = torch.tensor(bunch.target)
train = (x[:256], y[:256])

from harness import Crash

from harness import flat_params as flat

for name in ("n-fgsm", "grad-align"):
    params = {"eps": 0.1, "check_size": 32}
    options = dict(epochs=2, batch_size=64, lr=1e-2, progress=False, checkpoint_every=3,
                   ema_decay=0.9)  # the weight average resumes per rank too
    model = lambda: create_model("mlp", 10, (1, 8, 8), widths=(32,), seed=0)
    reference = fit(model(), train, objective=Crash(get_objective(name, **params)), **options)
    run_dir = sys.argv[1] + "/" + name
    try:
        fit(model(), train, objective=Crash(get_objective(name, **params), at=6),
            run_dir=run_dir, **options)
    except KeyboardInterrupt:
        pass
    resumed = fit(model(), train, objective=Crash(get_objective(name, **params)),
                  run_dir=run_dir, resume=True, **options)
    weights = flat(resumed.model)
    ranks = [torch.zeros_like(weights) for _ in range(2)]
    dist.all_gather(ranks, weights)
    exact = [None, None]
    dist.all_gather_object(exact, torch.allclose(weights, flat(reference.model), atol=1e-6))
    if dist.get_rank() == 0:
        print(f"RESULT {name} resume_exact={all(exact)} "
              f"ranks_agree={torch.equal(ranks[0], ranks[1])}", flush=True)
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # gloo's static destructors sometimes abort at interpreter exit (see test_defenses)
"""


@pytest.mark.timeout(300)
def test_fast_defenses_resume_exactly_under_torchrun(tmp_path):
    script = tmp_path / "ddp_fast.py"
    script.write_text(_DDP_SCRIPT)
    stdout = run_torchrun(str(script), str(tmp_path / "runs"), cwd=tmp_path)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 2, stdout
    assert all("resume_exact=True" in line and "ranks_agree=True" in line for line in lines), lines
    for name in FAST:
        states = load_checkpoint(tmp_path / "runs" / name / "checkpoint.pt")["objective"]
        assert len(states) == 2 and not torch.equal(states[0]["generator"], states[1]["generator"])
