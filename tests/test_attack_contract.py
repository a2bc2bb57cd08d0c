"""The contract every registered attack keeps (see /work/briefs/attacks.md and advlab.attacks._core).

For every name in ``ATTACKS`` and every norm it supports: ``x`` is not modified; the model's
train/eval mode and ``requires_grad`` flags are restored (also when the attack raises); no ``.grad``
is left on parameters; the result lies in the threat model / bounds; the same generator seed gives
bit-identical results; any batch size and input shape works; bad input is a clear error.
Attacks are called with small options (few steps/queries) picked from their signatures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab import ThreatModel
from advlab.attacks import ATTACKS, AttackInputError, MinimalNormResult
from advlab.attacks.registry import ATTACK_KINDS
from advlab.threat import lp_norm

NORMS = ["linf", "l2", "l1"]
EPS_SCALE = {"linf": 0.5, "l2": 2.0, "l1": 4.0}
DOCUMENTED = {"fgsm", "fgm", "pgd", "apgd", "square", "noise", "deepfool", "cw", "fmn", "universal", "spatial"}
#: Options that keep every attack fast; only those an attack's signature names are passed.
SMALL_OPTIONS: dict[str, Any] = {
    "steps": 3, "queries": 20, "binary_steps": 2, "samples": 3, "grid": (3, 2, 2), "lp_steps": 2,
    "max_iter": 2, "iterations": 2, "epochs": 1, "passes": 1, "n_target_classes": 2,
    "candidates": 3, "attack_steps": 2, "directions": 4, "bisection_steps": 4, "scan_steps": 4,
}
CASES = [(name, norm) for name in sorted(ATTACKS) for norm in NORMS]
SHAPES = [(1, 4, 4), (16,), (2, 2, 4)]
PROPERTY_SETTINGS = settings(max_examples=10, deadline=None)


def _options(fn: Callable[..., Any]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    return {key: value for key, value in SMALL_OPTIONS.items() if key in params}


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
               eps: float | torch.Tensor = 0.3, seed: int = 0, **extra: Any) -> Any:
    """Call attack ``name`` with the calling convention of its kind."""
    fn, kind = ATTACKS[name], ATTACK_KINDS[name]
    options = {**_options(fn), **extra, "generator": torch.Generator().manual_seed(seed)}
    if kind == "minimal":
        return fn(model, x, y, norm=norm, **options)
    return fn(model, x, y, ThreatModel(norm, eps), **options)


_SUPPORT: dict[tuple[str, str], bool] = {}


def supports(name: str, norm: str, model: nn.Module) -> bool:
    """Whether ``name`` supports ``norm``; an unsupported norm must be a ValueError naming it."""
    if (name, norm) not in _SUPPORT:
        x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        try:
            run_attack(name, model, x, torch.tensor([0, 1]), norm)
            _SUPPORT[name, norm] = True
        except ValueError as err:
            assert "norm" in str(err).lower() or norm in str(err), f"unclear error for {name}/{norm}: {err}"
            _SUPPORT[name, norm] = False
    return _SUPPORT[name, norm]


def first_supported_norm(name: str, model: nn.Module) -> str:
    norms = [norm for norm in NORMS if supports(name, norm, model)]
    assert norms, f"{name} supports none of {NORMS}"
    return norms[0]


def check_result(name: str, out: Any, x: torch.Tensor, y: torch.Tensor, model: nn.Module, norm: str,
                 eps: float | torch.Tensor) -> torch.Tensor:
    """Assert the kind-specific guarantees on the output; return the tensor to compare for determinism."""
    kind = ATTACK_KINDS[name]
    if kind == "universal":
        v = out if isinstance(out, torch.Tensor) else out.v
        assert v.shape == x.shape[1:]
        assert lp_norm(v[None], norm).item() <= float(eps) * (1 + 1e-5) + 1e-6
        return v
    if isinstance(out, tuple):  # spatial with return_info
        out = out[0]
    if isinstance(out, MinimalNormResult):
        failed = ~out.success
        assert torch.equal(out.x_adv[failed], x[failed]) and torch.isinf(out.norms[failed]).all()
        torch.testing.assert_close(out.norms[out.success], lp_norm(out.x_adv - x, norm)[out.success],
                                   atol=1e-4, rtol=1e-4)
        with torch.no_grad():
            assert (model(out.x_adv[out.success]).argmax(dim=1) != y[out.success]).all()
        out = out.x_adv
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    if kind == "bounded":
        assert ThreatModel(norm, eps).contains(x, out).all()
    return out


def _freeze_some(model: nn.Module) -> list[bool]:
    """Train mode, with the first parameter frozen: the state every attack must restore."""
    model.train()
    for index, p in enumerate(model.parameters()):
        p.requires_grad_(index != 0)
        p.grad = None
    return [p.requires_grad for p in model.parameters()]


def assert_model_restored(model: nn.Module, flags: list[bool]) -> None:
    assert all(m.training for m in model.modules()), "train mode not restored"
    assert [p.requires_grad for p in model.parameters()] == flags, "requires_grad not restored"
    assert all(p.grad is None for p in model.parameters()), ".grad left on parameters"


# ------------------------------------------------------------------------------ registry
def test_every_documented_attack_is_registered() -> None:
    assert set(ATTACK_KINDS) == set(ATTACKS)
    assert set(ATTACK_KINDS.values()) <= {"bounded", "minimal", "universal", "spatial"}
    assert not DOCUMENTED - set(ATTACKS), f"not registered: {sorted(DOCUMENTED - set(ATTACKS))}"


# ------------------------------------------------------------------------------ properties
@st.composite
def problems(draw: st.DrawFn, name: str, norm: str) -> tuple[torch.Tensor, torch.Tensor, Any]:
    batch = draw(st.integers(1, 6))
    shapes = [s for s in SHAPES if len(s) == 3] if ATTACK_KINDS[name] == "spatial" else SHAPES
    shape = (batch, *draw(st.sampled_from(shapes)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(shape, generator=gen)
    y = torch.randint(0, 5, (batch,), generator=gen)
    fraction = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]))
    eps: Any = fraction * EPS_SCALE[norm]
    if ATTACK_KINDS[name] == "bounded" and draw(st.booleans()):  # per-sample radii
        eps = torch.rand(batch, generator=gen) * EPS_SCALE[norm]
    return x, y, eps


@pytest.mark.parametrize("name,norm", CASES)
def test_contract_properties(name: str, norm: str, tiny_model: nn.Module) -> None:
    if not supports(name, norm, tiny_model):
        return  # the clear ValueError was checked by supports()

    @PROPERTY_SETTINGS
    @given(problem=problems(name, norm))
    def check(problem: tuple[torch.Tensor, torch.Tensor, Any]) -> None:
        x, y, eps = problem
        x_before = x.clone()
        flags = _freeze_some(tiny_model)
        first = run_attack(name, tiny_model, x, y, norm, eps)
        assert torch.equal(x, x_before), "x was modified"
        assert_model_restored(tiny_model, flags)
        result = check_result(name, first, x, y, tiny_model, norm, eps)
        again = check_result(name, run_attack(name, tiny_model, x, y, norm, eps), x, y, tiny_model, norm, eps)
        assert torch.equal(result, again), "not bit-identical for the same generator seed"

    check()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_minimal_attacks_report_consistent_info(name: str, tiny_model: nn.Module) -> None:
    if ATTACK_KINDS[name] != "minimal":
        return
    norm = first_supported_norm(name, tiny_model)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(2))
    info = run_attack(name, tiny_model, x, y, norm, return_info=True)
    assert isinstance(info, MinimalNormResult)
    check_result(name, info, x, y, tiny_model, norm, 0.0)
    plain = run_attack(name, tiny_model, x, y, norm)
    assert torch.equal(plain, info.x_adv)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_batch_of_one_and_flat_inputs(name: str, tiny_model: nn.Module) -> None:
    norm = first_supported_norm(name, tiny_model)
    one = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    check_result(name, run_attack(name, tiny_model, one, torch.tensor([2]), norm), one, torch.tensor([2]),
                 tiny_model, norm, 0.3)
    flat = torch.rand(3, 16, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 3, 4])
    if ATTACK_KINDS[name] == "spatial":  # rotations need images: a clear error is the contract
        with pytest.raises(ValueError, match="image"):
            run_attack(name, tiny_model, flat, labels, norm)
        return
    check_result(name, run_attack(name, tiny_model, flat, labels, norm), flat, labels, tiny_model, norm, 0.3)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_input_that_requires_grad(name: str, tiny_model: nn.Module) -> None:
    """An ``x`` that is part of a user's graph is attacked like any other: same result, detached,
    and no ``.grad`` appears on it."""
    norm = first_supported_norm(name, tiny_model)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(6))
    plain = run_attack(name, tiny_model, x, y, norm, 0.3)
    x_graph = x.clone().requires_grad_(True)
    out = run_attack(name, tiny_model, x_graph, y, norm, 0.3)
    out = out.x_adv if isinstance(out, MinimalNormResult) else out
    plain = plain.x_adv if isinstance(plain, MinimalNormResult) else plain
    assert not out.requires_grad and x_graph.grad is None
    assert torch.equal(out, plain)


# ------------------------------------------------------------------------------ bad input
def _with_nan(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone()
    x[1, 0, 2, 1] = float("nan")
    return x, y


def _with_inf(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone()
    x[2, 0, 0, 3] = -float("inf")
    return x, y


BAD_INPUTS: dict[str, tuple[Callable[..., tuple[torch.Tensor, torch.Tensor]], str]] = {
    "nan": (_with_nan, "NaN"),
    "inf": (_with_inf, "inf"),
    "outside_bounds": (lambda x, y: (x + 1.5, y), "outside the bounds"),
    "label_mismatch": (lambda x, y: (x, y[:-1]), "mismatch"),
    "label_range": (lambda x, y: (x, torch.full_like(y, 7)), "out of range"),
}


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bad_input_is_a_clear_error(name: str, bad: str, tiny_model: nn.Module) -> None:
    norm = first_supported_norm(name, tiny_model)
    make, match = BAD_INPUTS[bad]
    x, y = make(torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2]))
    flags = _freeze_some(tiny_model)
    with pytest.raises(AttackInputError, match=match):
        run_attack(name, tiny_model, x, y, norm)
    assert_model_restored(tiny_model, flags)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_probability_outputs_warn(name: str, tiny_model: nn.Module) -> None:
    norm = first_supported_norm(name, tiny_model)
    model = nn.Sequential(tiny_model, nn.Softmax(dim=1))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="probabilities"):
        run_attack(name, model, x, torch.tensor([0, 1, 2]), norm)


class FailsOnSecondCall(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom in forward")
        return self.inner(x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_model_restored_when_the_attack_raises(name: str, tiny_model: nn.Module) -> None:
    norm = first_supported_norm(name, tiny_model)
    model = FailsOnSecondCall(tiny_model)
    flags = _freeze_some(model)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="boom in forward"):
        run_attack(name, model, x, torch.tensor([0, 1, 2]), norm)
    assert_model_restored(model, flags)
