"""advlab.evaluate: ensemble worst case, eps pooling, sanity flags, records."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.evaluation import FLAGS, AttackStep, EvaluationResult
from advlab.evaluation.presets import _apgd

N = 96


class Quantize(nn.Module):
    """Rounds inputs to a few levels: a zero-gradient (shattered) input layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class InputNoise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)


@pytest.fixture(scope="module")
def points(digits):
    _, _, x_test, y_test = digits
    return x_test[:N], y_test[:N]


def codes(result: EvaluationResult) -> set[str]:
    return {w["code"] for w in result.warnings}


def test_worst_case_not_above_single_attacks(digits_mlp, points):
    x, y = points
    threat = ThreatModel("linf", 0.06)
    result = evaluate(digits_mlp, x, y, threat, attacks="standard")
    assert result.clean_accuracy > 0.9
    assert result.robust_accuracy < result.clean_accuracy
    for loss in ("ce", "dlr"):
        single = evaluate(digits_mlp, x, y, threat, sanity=False,
                          attacks=[AttackStep(f"apgd-{loss}", _apgd(loss=loss, steps=100))])
        assert result.robust_accuracy <= single.robust_accuracy + 1e-9
    # per-sample bookkeeping is consistent
    assert result.robust_correct.sum().item() == round(result.robust_accuracy * N)
    broken = [b for b in result.broken_by if b not in (None, "clean")]
    assert len(broken) == int(result.clean_correct.sum() - result.robust_correct.sum())
    assert sum(int(v["breaks"]) for v in result.per_attack.values()) == len(broken)
    assert torch.all(ThreatModel("linf", 0.06).contains(x, result.x_adv))


def test_eps_sweep_is_monotone_and_reuses(digits_mlp, points):
    x, y = points
    results = evaluate(digits_mlp, x, y, ThreatModel("l2", 1.0), eps=[1.0, 0.25, 0.5],
                       attacks="fast")
    assert [r.eps for r in results] == [0.25, 0.5, 1.0]
    accs = [r.robust_accuracy for r in results]
    assert accs == sorted(accs, reverse=True)
    # points broken at a smaller eps are not attacked again at a larger one
    assert results[1].per_attack["apgd-ce"]["ran_on"] <= round(results[0].robust_accuracy * N)


def test_quantised_model_flagged_and_broken(digits_mlp, points):
    x, y = points
    model = nn.Sequential(Quantize(), digits_mlp).eval()
    threat = ThreatModel("linf", 0.15)
    result = evaluate(model, x, y, threat, attacks="standard")
    assert "zero_gradients" in codes(result)
    white_box = evaluate(model, x, y, threat, sanity=False,
                         attacks=[AttackStep("apgd-ce", _apgd(loss="ce", steps=50))])
    assert white_box.robust_accuracy > result.clean_accuracy - 0.05  # gradients are useless
    assert result.robust_accuracy < white_box.robust_accuracy - 0.3  # but BPDA breaks it
    assert result.per_attack["bpda-apgd-ce"]["breaks"] > 0  # straight-through, verified
    assert "unavailable_gradients" in codes(result)
    plain = evaluate(model, x, y, threat, attacks="standard", bpda=False)  # only the black box
    assert "blackbox_stronger" in codes(plain) and plain.per_attack["square"]["breaks"] > 0


def test_saturated_logits_flagged_and_broken(digits_mlp, points):
    x, y = points
    model = nn.Sequential(digits_mlp, Scale(1e4)).eval()
    threat = ThreatModel("linf", 0.1)
    result = evaluate(model, x, y, threat, attacks="standard")
    reference = evaluate(digits_mlp, x, y, threat, attacks="fast", sanity=False)
    assert codes(result) & {"zero_gradients", "vanishing_gradients"}
    assert result.robust_accuracy <= reference.robust_accuracy + 0.05


def test_randomized_model_switches_to_eot(digits_mlp, points):
    x, y = points
    model = nn.Sequential(InputNoise(), digits_mlp).eval()
    result = evaluate(model, x[:32], y[:32], ThreatModel("linf", 0.1), attacks="fast", eot_samples=4)
    assert "randomized" in codes(result)
    assert result.robust_accuracy < result.clean_accuracy


def test_flags_documented_and_explained(digits_mlp, points):
    x, y = points
    untrained = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.nn.init.zeros_(untrained[1].weight)
    result = evaluate(untrained, x, y, ThreatModel("linf", 0.1), attacks="fast")
    assert "chance_accuracy" in codes(result)
    for flag in result.warnings:
        assert flag["code"] in FLAGS and flag["meaning"] and flag["advice"]


def test_record_round_trip_and_store(digits_mlp, points, tmp_path):
    from advlab.store import Store

    x, y = points
    with Store(tmp_path / "advlab.db") as store:
        result = evaluate(digits_mlp, x[:32], y[:32], ThreatModel("linf", 0.05), attacks="fast",
                          store=store, run_name="digits-mlp")
        stored = store.get_evaluation(result.extras["store_id"])
    again = EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == result.to_dict()
    assert EvaluationResult.from_dict(stored["result"]).to_dict() == {
        k: v for k, v in result.to_dict().items() if k != "extras"} | {"extras": stored["result"]["extras"]}
    assert result.model_id and result.data_id and result.version


def test_accepts_loader_and_dataset_pair(digits_mlp, points):
    x, y = points
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:20], y[:20]), batch_size=7)
    a = evaluate(digits_mlp, loader, ThreatModel("linf", 0.05), attacks="fast", sanity=False)
    b = evaluate(digits_mlp, (x[:20], y[:20]), ThreatModel("linf", 0.05), attacks="fast", sanity=False)
    assert a.robust_accuracy == b.robust_accuracy and a.n == 20


@pytest.mark.parametrize("bad, match", [
    (dict(threat=None), "ThreatModel"),
    (dict(attacks="strongest"), "unknown preset"),
    (dict(x=torch.full((4, 1, 8, 8), 2.0)), "outside the bounds"),
    (dict(y=torch.tensor([0, 1, 2])), "mismatch"),
])
def test_bad_input(digits_mlp, points, bad, match):
    x, y = points
    args = dict(x=x[:4], y=y[:4], threat=ThreatModel("linf", 0.1), attacks="fast") | bad
    with pytest.raises((ValueError, TypeError), match=match):
        evaluate(digits_mlp, args["x"], args["y"], args["threat"], attacks=args["attacks"])


def _recording(log: list[int], broken: bool):
    """An attack step that records how many points it ran on; breaks them all when ``broken``
    (by a large APGD step), else returns the inputs."""
    strong = _apgd(loss="ce", steps=20)

    def run(model, x, y, threat, generator=None):
        log.append(len(x))
        return strong(model, x, y, threat, generator=generator) if broken else x.clone()

    return run


def test_escalation_runs_only_where_the_probe_broke_something(digits_mlp, points):
    x, y = points
    threat = ThreatModel("linf", 0.04)
    probe, full = [], []
    quiet = AttackStep("probe", _recording(probe, broken=False), escalate=_recording(full, True))
    result = evaluate(digits_mlp, x, y, threat, attacks=[quiet], sanity=False)
    assert probe and not full  # nothing broken: no escalation
    assert result.robust_accuracy == result.clean_accuracy
    probe, full = [], []
    loud = AttackStep("probe", _recording(probe, broken=True), escalate=_recording(full, True))
    result = evaluate(digits_mlp, x, y, threat, attacks=[loud], sanity=False)
    robust_after_probe = sum(probe) - result.per_attack["probe"]["breaks"]
    assert 0 < robust_after_probe < sum(probe)  # the probe broke some points, not all
    assert sum(full) == robust_after_probe  # escalation ran on exactly the rest


def test_masking_flags_run_the_escalated_step_at_once(digits_mlp, points):
    x, y = points
    model = nn.Sequential(Quantize(), digits_mlp).eval()
    probe, full = [], []
    step = AttackStep("probe", _recording(probe, broken=False), escalate=_recording(full, False))
    result = evaluate(model, x, y, ThreatModel("linf", 0.1), attacks=[step], bpda=False)
    assert "zero_gradients" in codes(result)
    assert full and not probe  # without BPDA the masking is not handled: full budget at once


def test_saturated_softmax_is_not_mistaken_for_masking(digits_mlp, points):
    """Huge logits zero the CE gradient but not the margin's: flagged, yet no full black box."""
    x, y = points
    model = nn.Sequential(digits_mlp, Scale(1e4)).eval()
    probe, full = [], []
    step = AttackStep("probe", _recording(probe, broken=False), escalate=_recording(full, False))
    result = evaluate(model, x, y, ThreatModel("linf", 0.1), attacks=[step])
    flagged = [w for w in result.warnings if w["code"] in ("zero_gradients", "vanishing_gradients")]
    assert flagged and "saturated softmax" in flagged[0]["detail"]
    assert probe and not full
