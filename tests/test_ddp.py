"""Data-parallel training with torchrun (2 CPU processes, gloo) against one process.

The data order of ``fit`` is that of ``DistributedSampler``, and ``batch_size`` is global, so
the two ranks' batches together are exactly the single process's batches; DDP averages the two
per-rank mean gradients, which equals the single-process mean gradient when the ranks hold equal
halves. With 1280 samples (a multiple of the batch 64) and a model without batch statistics,
the weights after 2 epochs therefore agree up to float rounding: tolerance 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from harness import run_torchrun

from advlab.store import Store
from advlab.training import load_checkpoint

TOLERANCE = 1e-5

_SCRIPT = """
import os, sys, torch
from torch import nn
from advlab.training import fit, unwrap_model
from sklearn.datasets import load_digits
torch.set_num_threads(1)
bunch = load_digits()
x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
y = torch.tensor(bunch.target)

def input_gradient_objective(model, x, y):
    # an adversarial-training-shaped objective: an inner step along the input gradient
    # through the DDP-wrapped model (torch.autograd.grad), then the loss on both batches
    x_inner = x.clone().requires_grad_(True)
    inner_loss = nn.functional.cross_entropy(model(x_inner), y)
    grad, = torch.autograd.grad(inner_loss, x_inner)
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    x_adv = (x + 0.5 * grad / norms).clamp(0, 1).detach()
    logits = model(x)
    loss = 0.5 * nn.functional.cross_entropy(logits, y) + 0.5 * nn.functional.cross_entropy(model(x_adv), y)
    assert unwrap_model(model) is not model or not torch.distributed.is_initialized()
    return loss, logits

def run(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    result = fit(model, (x[:1280], y[:1280]), val_data=(x[1280:], y[1280:]),
                 objective=input_gradient_objective, epochs=2, batch_size=64, lr=0.05,
                 optimizer="sgd", schedule="onecycle", checkpoint_every=7, progress=False,
                 run_dir=run_dir, store=run_dir + "/advlab.db")
    # one write() per rank: short writes to a pipe are atomic, separate print() pieces interleave
    sys.stdout.write(f"RESULT {torch.distributed.is_initialized()} {result.history[-1]['val_acc']}\\n")
    sys.stdout.flush()

if __name__ == "__main__":
    run(sys.argv[1])
    os._exit(0)  # as the advlab CLI does: Gloo's threads can abort the interpreter's finalisation
"""


@pytest.mark.timeout(300)
def test_two_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(_SCRIPT)
    ddp_out = run_torchrun(str(script), str(tmp_path / "ddp"), cwd=tmp_path, timeout=240)
    assert ddp_out.count("RESULT False") == 2  # both ranks finished; fit destroyed the group
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the single-process reference runs here, like the ranks: 1 thread
    try:
        scope = {"__name__": "single_process_reference"}
        exec(_SCRIPT, scope)
        scope["run"](str(tmp_path / "single"))
    finally:
        torch.set_num_threads(threads)
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    single = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["epoch"] == single["epoch"] == 2 and ddp["global_step"] == single["global_step"] == 40
    assert len(ddp["rng"]) == 2  # every rank's RNG state, for an exact resume
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=0, atol=TOLERANCE, msg=key)
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=TOLERANCE)
        # weights equal up to rounding (different batch shapes per process): the decisions
        # may differ only for points at the boundary, a few of the 517 val / 1280 train samples
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=3 / 517)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=3 / 1280)
    with Store(tmp_path / "ddp" / "advlab.db") as store:  # rank 0 alone logged each epoch once
        assert [m["epoch"] for m in store.get_metrics("ddp")] == [1, 2]


@pytest.mark.timeout(300)
def test_torchrun_train_command(tmp_path):
    out = tmp_path / "runs" / "ddp-cli"
    stdout = run_torchrun("-m", "advlab", "train", "--dataset", "digits", "--model", "mlp",
                          "--epochs", "1", "--batch-size", "64", "--n-train", "512",
                          "--no-progress", "--out", str(out), cwd=tmp_path, timeout=240)
    assert stdout.count("test acc") == 1  # rank 0 prints, rank 1 does not
    assert (out / "model.safetensors").exists() and (out / "train_result.json").exists()
    with Store(tmp_path / "runs" / "advlab.db") as store:
        assert [run["name"] for run in store.list_runs()] == ["ddp-cli"]
        assert store.get_run("ddp-cli")["config"]["world_size"] == 2
        assert len(store.get_metrics("ddp-cli")) == 1
