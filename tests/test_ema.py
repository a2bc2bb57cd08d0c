"""Model EMA (Polyak averaging) as an option of fit: the average equals a hand-computed EMA of
the weights after each step, it is the run's saved and returned model, and it resumes exactly."""

from __future__ import annotations

import pytest
import torch
from harness import Crash
from weights import assert_same_weights, snapshot

from advlab.models import create_model, load_model
from advlab.training import (
    fit,
    get_objective,
    load_checkpoint,
    standard_objective,
    unwrap_model,
)
from advlab.training.ema import ema_decay_at

DECAY = 0.9


def _mlp(seed: int = 0):
    return create_model("mlp", 10, (1, 8, 8), widths=(16,), seed=seed)


def test_ema_equals_a_hand_computed_average(digits, tmp_path):
    x, y = digits[0][:96], digits[1][:96]
    before = []  # the raw weights before every optimiser step

    def recording(model, xb, yb):
        before.append(snapshot(unwrap_model(model)))
        return standard_objective(model, xb, yb)

    result = fit(_mlp(), (x, y), objective=recording, epochs=2, batch_size=32, lr=0.05,
                 optimizer="sgd", schedule="constant", progress=False, run_dir=tmp_path,
                 ema_decay=DECAY)
    raw = load_checkpoint(tmp_path / "checkpoint.pt")
    after = [*before[1:], raw["model"]]  # the weights after step t are those before step t + 1
    average = {k: v.clone() for k, v in before[0].items()}  # starts at the initial weights
    for t, weights in enumerate(after):
        d = min(DECAY, (1 + t) / (10 + t))
        average = {k: d * average[k] + (1 - d) * weights[k] for k in average}
    assert len(after) == 6 and raw["ema"]["updates"] == 6
    assert_same_weights(raw["ema"]["state"], average)
    assert_same_weights(snapshot(result.model), average)  # no validation: the last average
    assert_same_weights(snapshot(load_model(tmp_path)), average)  # model.safetensors
    assert not torch.allclose(raw["model"]["1.weight"], average["1.weight"])  # not the raw weights


def test_the_average_is_validated_and_selected(digits, tmp_path):
    train, val = (digits[0][:320], digits[1][:320]), (digits[2], digits[3])
    result = fit(_mlp(), train, val_data=val, epochs=3, batch_size=32, lr=1e-2,
                 progress=False, run_dir=tmp_path, ema_decay=0.95)
    best = result.history[result.best_epoch - 1]["val_acc"]
    with torch.no_grad():
        accuracy = (result.model(val[0]).argmax(dim=1) == val[1]).float().mean().item()
    assert accuracy == pytest.approx(best)  # the returned model is the validated average
    assert result.config["ema"] == {"decay": 0.95, "warmup": True}


def test_ema_resumes_exactly(digits, tmp_path):
    x, y = digits[0][:320], digits[1][:320]
    options = dict(epochs=2, batch_size=32, lr=1e-2, progress=False, checkpoint_every=3,
                   ema_decay=0.99)
    reference = fit(_mlp(), (x, y), objective=Crash(), **options)
    with pytest.raises(KeyboardInterrupt):
        fit(_mlp(), (x, y), objective=Crash(at=14), run_dir=tmp_path, **options)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["ema"]["updates"] == 12
    resumed = fit(_mlp(seed=5), (x, y), objective=Crash(), run_dir=tmp_path, resume=True,
                  **options)
    assert_same_weights(snapshot(resumed.model), snapshot(reference.model))
    with pytest.raises(ValueError, match="config differs in ema"):  # no EMA now: refused
        fit(_mlp(), (x, y), objective=Crash(), run_dir=tmp_path, resume=True,
            **{**options, "ema_decay": None})


def test_bad_decay_and_the_warm_up():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 10_000) == 0.999 and ema_decay_at(0.5, 3, warmup=False) == 0.5
    for bad in (1.0, 0.0, -0.5, "0.9", True):
        with pytest.raises(ValueError, match="ema_decay must be a number in"):
            fit(_mlp(), (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)),
                ema_decay=bad, progress=False)


def test_a_rollback_restores_the_average(digits):
    """After a (forced) catastrophic-overfitting collapse in epoch 2 with on_collapse="stop",
    the run ends at epoch 1 -- and so does its weight average."""
    train = (digits[0][:256], digits[1][:256])
    options = dict(batch_size=64, lr=1e-2, schedule="constant", progress=False, ema_decay=0.9)

    def objective(force_at=None):
        defense = get_objective("fgsm-rs", eps=0.1, check_size=32, on_collapse="stop")
        watch, calls = defense.function.watch, []
        original = watch.check

        def check(*args):
            metrics, collapse = original(*args)
            calls.append(1)
            return metrics, ("forced" if len(calls) == force_at else collapse)

        watch.check = check
        return defense

    one_epoch = fit(_mlp(), train, objective=objective(), epochs=1, **options)
    stopped = fit(_mlp(), train, objective=objective(force_at=2), epochs=3, **options)
    assert stopped.events[0]["action"] == "stopped" and len(stopped.history) == 1
    assert_same_weights(snapshot(stopped.model), snapshot(one_epoch.model))
