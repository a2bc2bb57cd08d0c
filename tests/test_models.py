"""Tests for advlab.models: every registered model's shapes and gradients, Normalize, seeded
initialisation, the random ReLU networks, and safe save/load (safetensors + JSON)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from advlab.models import (
    MODELS,
    ModelFileError,
    ModelNotFoundError,
    Normalize,
    create_model,
    load_model,
    model_names,
    model_summary,
    save_model,
)

#: model name -> (kwargs keeping the test fast, natural input shapes)
NATURAL = {
    "mlp": ({"widths": (32,)}, [(1, 28, 28), (1, 8, 8), (2,)]),
    "small_cnn": ({}, [(1, 28, 28), (1, 8, 8), (3, 32, 32)]),
    "lenet": ({}, [(1, 28, 28), (1, 8, 8), (3, 32, 32)]),
    "preact_resnet18": ({"width": 8}, [(3, 32, 32), (1, 28, 28)]),
    "random_relu": ({"widths": (50,)}, [(1, 28, 28), (2,)]),
}
CASES = [(name, shape) for name, (_, shapes) in NATURAL.items() for shape in shapes]


def test_every_registered_model_is_tested():
    assert set(NATURAL) == set(model_names()) == set(MODELS)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_shapes_and_gradients(name, shape):
    kwargs, _ = NATURAL[name]
    model = create_model(name.replace("_", "-"), num_classes=7, input_shape=shape, seed=0, **kwargs)
    x = torch.rand(3, *shape, requires_grad=True)
    logits = model(x)
    assert logits.shape == (3, 7) and logits.dtype == torch.float32
    logits.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient reaches {param_name}"
        assert torch.isfinite(param.grad).all()
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_preact_resnet18_standard_size():
    model = create_model("preact_resnet18", input_shape=(3, 32, 32), seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 11.0e6 < n_params < 11.3e6  # the usual CIFAR PreAct ResNet-18 has ~11.17M


def test_normalize_images_and_vectors():
    norm = Normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    x = torch.rand(4, 3, 5, 5)
    expected = torch.stack([(x[:, c] - m) / s for c, (m, s) in
                            enumerate(zip((0.1, 0.2, 0.3), (0.5, 0.25, 2.0)))], dim=1)
    torch.testing.assert_close(norm(x), expected)
    vectors = torch.rand(6, 2)
    torch.testing.assert_close(Normalize((0.5, 0.0), (0.1, 1.0))(vectors),
                               (vectors - torch.tensor([0.5, 0.0])) / torch.tensor([0.1, 1.0]))
    torch.testing.assert_close(Normalize((0.5,), (0.25,))(x), (x - 0.5) / 0.25)
    assert {name for name, _ in norm.named_buffers()} == {"mean", "std"}
    with pytest.raises(ValueError, match="3 channels got input of shape"):
        norm(torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="std > 0"):
        Normalize((0.0,), (0.0,))
    with pytest.raises(ValueError, match="same non-zero length"):
        Normalize((0.0, 1.0), (1.0,))


def test_create_model_with_normalize_and_spec():
    model = create_model("small-cnn", 10, (1, 8, 8), normalize=((0.3,), (0.2,)), seed=0)
    assert isinstance(model, nn.Sequential) and isinstance(model[0], Normalize)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x), model[1]((x - 0.3) / 0.2))
    spec = model.advlab_spec
    assert spec == json.loads(json.dumps(spec))
    assert spec["name"] == "small_cnn" and spec["input_shape"] == [1, 8, 8]
    assert spec["normalize"] == [[0.3], [0.2]] and spec["kwargs"] == {}
    with pytest.raises(ValueError, match="normalize has 3 means but the input has 1 channels"):
        create_model("mlp", input_shape=(1, 8, 8), normalize=((0.1, 0.2, 0.3), (1, 1, 1)))


def test_create_model_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'; available: lenet, mlp"):
        create_model("resnet50")
    with pytest.raises(TypeError, match=r"does not take argument\(s\) depth; it accepts: widths"):
        create_model("mlp", depth=3)
    with pytest.raises(ValueError, match="needs image inputs"):
        create_model("small_cnn", input_shape=(64,))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        create_model("mlp", num_classes=0)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        create_model("mlp", widths=(object(),))


def test_seed_reproducible_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = create_model("lenet", seed=5)
    second = create_model("lenet", seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    third = create_model("lenet", seed=6)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(first.parameters(), third.parameters()))


def test_random_relu_networks():
    net = create_model("random_relu", num_classes=1, input_shape=(400,), widths=(1000,), seed=0)
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(400, 1000), (1000, 1)]
    assert all(m.bias is None for m in layers)
    assert abs(float(layers[0].weight.detach().std()) * 400**0.5 - 1) < 0.02  # N(0, 1/fan_in)
    assert net(torch.rand(5, 400)).shape == (5, 1)
    deep = create_model("random_relu", input_shape=(2,), widths=(16,), depth=3, bias=True)
    shapes = [m.weight.shape for m in deep.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(16, 2), (16, 16), (16, 16), (10, 16)]
    bottleneck = create_model("random_relu", input_shape=(8,), widths=(100, 3, 100))
    assert [m.out_features for m in bottleneck.modules() if isinstance(m, nn.Linear)] == [100, 3, 100, 10]
    with pytest.raises(ValueError, match="depth"):
        create_model("random_relu", widths=(10, 10), depth=2)


# ----------------------------------------------------------------------------- save / load
@pytest.fixture()
def saved(tmp_path) -> tuple[nn.Module, Path]:
    model = create_model("small_cnn", 10, (1, 8, 8), normalize=((0.3,), (0.2,)), seed=0,
                         channels=(4, 8), hidden=16)
    path = save_model(model, tmp_path / "run", dataset="digits", metrics={"acc": 0.9, "bad": float("nan")})
    return model.eval(), path


def test_save_load_round_trip(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "model.safetensors"]
    x = torch.rand(4, 1, 8, 8)
    for where in (path, path / "model.json", path / "model.safetensors"):
        loaded = load_model(where)
        assert not loaded.training and all(not m.training for m in loaded.modules())
        assert torch.equal(loaded(x), model(x))
    assert loaded.advlab_metadata == {"dataset": "digits", "metrics": {"acc": 0.9, "bad": None}}
    assert loaded.advlab_spec == model.advlab_spec
    document = json.loads((path / "model.json").read_text())
    assert len(document["sha256"]) == 64 and document["advlab_version"]
    summary = model_summary(loaded)
    assert summary["name"] == "small_cnn" and summary["num_parameters"] == document["num_parameters"]


def test_round_trip_keeps_batchnorm_buffers(tmp_path):
    model = create_model("preact_resnet18", input_shape=(3, 16, 16), width=4, seed=1)
    model(torch.rand(8, 3, 16, 16))  # train-mode forward moves the running statistics
    save_model(model, tmp_path, name="resnet")
    loaded = load_model(tmp_path, name="resnet")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))


def test_load_model_leaves_global_rng_alone(saved):
    _, path = saved
    before = torch.random.get_rng_state()
    load_model(path)
    assert torch.equal(torch.random.get_rng_state(), before)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_pickle_named_safetensors(saved, tmp_path):
    _, path = saved
    marker = tmp_path / "pwned"
    (path / "model.safetensors").write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(ModelFileError, match=r"model\.safetensors: not a safetensors file.*pickle"):
        load_model(path)
    assert not marker.exists()
    torch.save(create_model("mlp").state_dict(), path / "model.safetensors")
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_model(path)


def test_refuses_tampered_weights(saved):
    _, path = saved
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last tensor's bytes: still valid safetensors
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"model\.safetensors: sha256 checksum mismatch"):
        load_model(path)


def _edit_json(path: Path, edit) -> None:
    document = json.loads((path / "model.json").read_text())
    edit(document)
    (path / "model.json").write_text(json.dumps(document))


def test_refuses_unknown_architecture(saved):
    _, path = saved
    _edit_json(path, lambda d: d["spec"].update(name="evil_net"))
    with pytest.raises(ModelFileError, match=r"model\.json: cannot rebuild .*unknown model 'evil_net'"):
        load_model(path)


def test_refuses_wrong_keys_and_shapes(saved):
    _, path = saved
    _edit_json(path, lambda d: d["spec"]["kwargs"].update(hidden=32))
    with pytest.raises(ModelFileError, match="does not match the architecture.*shape mismatches"):
        load_model(path)
    _edit_json(path, lambda d: d["spec"]["kwargs"].update(hidden=16))
    tensors = load_file(path / "model.safetensors")
    del tensors["1.0.weight"]
    save_file(tensors, path / "model.safetensors")
    import hashlib

    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    _edit_json(path, lambda d: d.update(sha256=digest))
    with pytest.raises(ModelFileError, match=r"missing keys \['1.0.weight'\]"):
        load_model(path)


def test_refuses_bad_json_and_missing_files(saved, tmp_path):
    _, path = saved
    (path / "model.json").write_bytes(b"\x80\x04not json")
    with pytest.raises(ModelFileError, match=r"model\.json: not a JSON file"):
        load_model(path)
    (path / "model.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not an advlab model description"):
        load_model(path)
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        load_model(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match="other.json not found"):
        load_model(path, name="other")


def test_save_model_errors(tmp_path):
    with pytest.raises(ValueError, match=r"without a recipe: build it with advlab\.create_model.*factory="):
        save_model(nn.Linear(2, 2), tmp_path)
    model = create_model("mlp", input_shape=(2,), widths=(4,))
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save_model(model, tmp_path, optimizer=object())
    with pytest.raises(ValueError, match="plain name"):
        save_model(model, tmp_path, name="../escape")
    wrapper = nn.DataParallel(model)  # unwrapped like DistributedDataParallel
    loaded = load_model(save_model(wrapper, tmp_path / "ddp"))
    assert loaded.advlab_spec["name"] == "mlp"
    holder = nn.Module()
    holder.module = model  # not a wrapper: a module that merely has a child called "module"
    with pytest.raises(ValueError, match="without a recipe"):
        save_model(holder, tmp_path / "holder")


def test_unwrap_is_one_function():
    from advlab.models.registry import unwrap
    from advlab.training import unwrap_model

    model = create_model("mlp", input_shape=(2,), widths=(4,))
    assert unwrap_model is unwrap
    assert unwrap(nn.DataParallel(nn.DataParallel(model))) is model and unwrap(model) is model


# ----------------------------------------------------------------------------- the Registry
def test_registry_folds_names_and_keeps_metadata():
    from advlab.registry import Registry

    registry: Registry = Registry("widget")

    @registry.register("Fancy-Widget", colour="red")
    def fancy():
        return "fancy"

    registry.add("plain", len)
    assert registry.get("fancy_widget") is fancy and registry["FANCY WIDGET"] is fancy
    assert "fancy-widget" in registry and "Fancy_Widget" in registry and "other" not in registry
    assert registry.names() == ["Fancy-Widget", "plain"] == list(registry) == registry.keys()
    assert len(registry) == 2 and dict(registry.items())["plain"] is len
    assert registry.resolve("fancy_WIDGET") == "Fancy-Widget"
    assert registry.metadata("fancy-widget") == {"colour": "red"}
    registry.metadata("fancy-widget")["colour"] = "blue"  # a copy: the entry is unchanged
    assert registry.metadata("fancy-widget") == {"colour": "red"}


def test_registry_refuses_duplicates_unless_replaced():
    from advlab.registry import Registry

    registry: Registry = Registry("widget")
    registry.add("w", len)
    with pytest.raises(ValueError, match=r"widget 'W' is already registered by builtins\.len; "
                                         r"builtins\.abs cannot take the name.*replace=True"):
        registry.add("W", abs)
    assert registry.get("w") is len
    registry.add("W", abs, replace=True)
    assert registry.get("w") is abs and registry.names() == ["W"]


def test_registry_unknown_names_list_the_choices():
    from advlab.attacks import get_attack
    from advlab.registry import Registry

    registry: Registry = Registry("widget")
    for name in ("alpha", "beta", "gamma"):
        registry.add(name, name.upper)
    with pytest.raises(ValueError, match=r"^unknown widget 'betta'; available: alpha, beta, "
                                         r"gamma \(did you mean 'beta'\?\)$"):
        registry.get("betta")
    with pytest.raises(KeyError):  # dict-style lookups raise a KeyError too
        registry["zzz"]
    with pytest.raises(ValueError, match=r"unknown widget 'zzz'; available: alpha, beta, gamma$"):
        registry.get("zzz")
    with pytest.raises(ValueError, match=r"unknown attack 'pdg'; available: .*pgd.*did you mean 'pgd'"):
        get_attack("pdg")


def test_library_registries_share_the_class():
    from advlab.attacks import ATTACKS
    from advlab.attacks.registry import ATTACK_KINDS
    from advlab.data import DATASETS
    from advlab.registry import Registry
    from advlab.training import OBJECTIVES

    assert all(isinstance(r, Registry) for r in (ATTACKS, MODELS, DATASETS, OBJECTIVES))
    assert ATTACK_KINDS["PGD"] == ATTACKS.metadata("pgd")["kind"] == "bounded"
    assert set(ATTACK_KINDS) == set(ATTACKS) and ATTACK_KINDS.get("nope") is None
    assert callable(DATASETS.metadata("fashion_mnist")["status"])
    assert all(OBJECTIVES.metadata(name)["description"] for name in OBJECTIVES)
