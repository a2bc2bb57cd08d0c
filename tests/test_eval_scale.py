"""Evaluation at scale: sharded over processes (gloo, CPU), resumable after SIGKILL, streaming
with bounded memory, and the opt-in kernels verified against float32 eager results.

The digits MLP and 96-160 points keep each test to seconds; the torchrun tests start 2 processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from harness import one_thread
from torch import nn

from advlab import ThreatModel, evaluate
from advlab.evaluation.resume import CheckpointExists, CheckpointMismatch
from advlab.evaluation.streaming import iter_batches
from advlab.store import Store

ROOT = Path(__file__).resolve().parents[1]
THREAT = ThreatModel("linf", 0.06)
NET = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
"""
SCRIPT = """
import json, os, sys, torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from net import make
from advlab import ThreatModel, evaluate
from sklearn.datasets import load_digits
torch.set_num_threads(1)
model = make()
model.load_state_dict(torch.load(sys.argv[1] + "/w.pt", weights_only=True))
bunch = load_digits()
x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)[1500:1600]
y = torch.tensor(bunch.target)[1500:1600]
dist.init_process_group("gloo")
results = evaluate(model.eval(), x, y, ThreatModel("linf", 0.06), eps=[0.03, 0.06], attacks="fast",
                   batch_size=16, seed=3, store=sys.argv[1] + "/advlab.db", run_name="ddp")
if dist.get_rank() == 0:
    with open(sys.argv[1] + "/ddp.json", "w") as fh:
        json.dump([r.to_dict() for r in results], fh)
sys.stdout.write(f"RANK {dist.get_rank()} n={results[0].n} world={results[0].extras['world_size']}\\n")
sys.stdout.flush()
dist.barrier()
dist.destroy_process_group()
os._exit(0)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _torchrun(*args: str) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={port}", *args]


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture()
def saved_mlp(tmp_path, digits_mlp):
    (tmp_path / "net.py").write_text(NET)
    torch.save({f"{k}": v for k, v in digits_mlp.state_dict().items()}, tmp_path / "w.pt")
    return tmp_path


def _points(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)[1500:1500 + n]
    return x, torch.tensor(bunch.target)[1500:1500 + n]


def _same(a, b) -> None:
    for r, s in zip(a, b, strict=True):
        assert torch.equal(r.robust_correct, s.robust_correct)
        assert torch.equal(r.clean_correct, s.clean_correct)
        assert r.broken_by == s.broken_by
        assert torch.equal(r.distance, s.distance)
        assert {k: v["breaks"] for k, v in r.per_attack.items()} == {k: v["breaks"] for k, v in s.per_attack.items()}


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_bit_for_bit(saved_mlp, digits_mlp):
    (saved_mlp / "script.py").write_text(SCRIPT)
    stdout = _run(_torchrun(str(saved_mlp / "script.py"), str(saved_mlp)), saved_mlp)
    assert stdout.count("n=100 world=2") == 2  # every rank gets the gathered results
    x, y = _points()
    with one_thread():
        single = evaluate(digits_mlp, x, y, THREAT, eps=[0.03, 0.06], attacks="fast", batch_size=16,
                          seed=3, batches=True)
    from advlab.evaluation import EvaluationResult

    ddp = [EvaluationResult.from_dict(r) for r in json.loads((saved_mlp / "ddp.json").read_text())]
    _same(ddp, single)
    assert 0 < single[1].robust_accuracy < single[1].clean_accuracy  # the attacks broke some, not all
    with Store(saved_mlp / "advlab.db") as store:  # rank 0 alone wrote the rows: one per eps
        assert len(store.get_evaluations("ddp")) == 2


@pytest.mark.timeout(300)
def test_torchrun_evaluate_command_matches_one_process(saved_mlp):
    args = ["evaluate", "net.py:make", "--weights", "w.pt", "--dataset", "digits", "--eps", "0.06",
            "--preset", "fast", "--points", "48", "--batch-size", "16", "--no-progress"]
    stdout = _run(_torchrun("-m", "advlab", *args, "--out", "ddp.json"), saved_mlp)
    assert stdout.count("verdict:") == 1  # rank 0 prints, rank 1 does not
    _run([sys.executable, "-m", "advlab", *args, "--out", "one.json"], saved_mlp)
    ddp, one = (json.loads((saved_mlp / f"{name}.json").read_text()) for name in ("ddp", "one"))
    assert ddp[0]["robust_correct"] == one[0]["robust_correct"] and ddp[0]["n"] == 48
    assert ddp[0]["extras"]["world_size"] == 2 and one[0]["extras"]["world_size"] == 1
    assert not (saved_mlp / "ddp.json.partial").exists()  # the sidecar goes once the JSON is written


KILL_SCRIPT = """
import os, signal, sys, torch
sys.path.insert(0, sys.argv[1])
from net import make
from advlab import ThreatModel, evaluate
from sklearn.datasets import load_digits
torch.set_num_threads(1)
model = make()
model.load_state_dict(torch.load(sys.argv[1] + "/w.pt", weights_only=True))
bunch = load_digits()
x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)[1500:1596]
y = torch.tensor(bunch.target)[1500:1596]
ticks = []

def progress(name, done):
    ticks.append(done)
    if len(ticks) == 2:  # two batches are committed: die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)

evaluate(model.eval(), x, y, ThreatModel("linf", 0.06), eps=[0.03, 0.06], attacks="fast",
         batch_size=16, seed=3, checkpoint=sys.argv[1] + "/eval.partial", progress=progress)
"""


def _run_killed(directory: Path) -> None:
    (directory / "kill.py").write_text(KILL_SCRIPT)
    done = subprocess.run([sys.executable, str(directory / "kill.py"), str(directory)], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == -signal.SIGKILL, done.stderr


def _kwargs(path: Path, **more):
    return dict(eps=[0.03, 0.06], attacks="fast", batch_size=16, seed=3, checkpoint=path, **more)


@pytest.mark.timeout(300)
def test_resume_after_sigkill_equals_an_uninterrupted_run(saved_mlp, digits_mlp):
    _run_killed(saved_mlp)
    sidecar = saved_mlp / "eval.partial"
    assert len(sidecar.read_text().splitlines()) == 3  # the header and the two committed batches
    x, y = _points(96)
    with pytest.raises(CheckpointExists, match="resume=True"):
        evaluate(digits_mlp, x, y, THREAT, **_kwargs(sidecar))
    ticks: list[tuple[str, int]] = []
    resumed = evaluate(digits_mlp, x, y, THREAT, **_kwargs(sidecar, resume=True),
                       progress=lambda name, done: ticks.append((name, done)))
    assert [t for t in ticks if t[0] == "resumed"] == [("resumed", 16)] * 2  # not attacked again
    assert sum(done for _, done in ticks) == 96
    assert not sidecar.exists()
    uninterrupted = evaluate(digits_mlp, x, y, THREAT, eps=[0.03, 0.06], attacks="fast",
                             batch_size=16, seed=3, batches=True)
    _same(resumed, uninterrupted)


@pytest.mark.parametrize("change, match", [
    ("model", "model_id"), ("data", "points of batch 0"), ("preset", "preset"),
    ("threat", "norm"), ("eps", "eps"), ("kernels", "kernels.*--no-channels-last"),
])
def test_resume_refuses_other_inputs(tmp_path, digits_mlp, change, match):
    x, y = _points(48)
    sidecar = tmp_path / "eval.partial"
    ticks = []

    def stop_after_one(name, done):
        ticks.append(done)
        raise KeyboardInterrupt  # interrupted after the first batch was committed

    with pytest.raises(KeyboardInterrupt):
        evaluate(digits_mlp, x, y, THREAT, **_kwargs(sidecar), progress=stop_after_one)
    model, threat, kwargs = digits_mlp, THREAT, _kwargs(sidecar, resume=True)
    if change == "model":
        model = nn.Sequential(*digits_mlp)  # same layers, one weight changed below
        import copy
        model = copy.deepcopy(model)
        with torch.no_grad():
            model[1].bias[0] += 1e-3
    elif change == "data":
        x = x.flip(0)
    elif change == "preset":
        kwargs["attacks"] = "standard"
    elif change == "threat":
        threat = ThreatModel("l2", 0.5)
        kwargs["eps"] = [0.03, 0.06]
    elif change == "kernels":
        kwargs["micro_batch"] = 0 if kwargs.get("micro_batch") else 8
    else:
        kwargs["eps"] = [0.03, 0.05]
    with pytest.raises(CheckpointMismatch, match=match):
        evaluate(model, x, y, threat, **kwargs)


def test_resume_needs_a_checkpoint(digits_mlp):
    x, y = _points(16)
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        evaluate(digits_mlp, x, y, THREAT, resume=True)


class _DigitStream(torch.utils.data.IterableDataset):
    """``total`` points cycled from 200 digits, made on the fly in loader batches of ``chunk``;
    every tensor handed out is tracked (weakly) to measure what the evaluation keeps alive."""

    def __init__(self, total: int, chunk: int) -> None:
        self.total, self.chunk = total, chunk
        self.x, self.y = _points(200)
        self.alive: weakref.WeakSet = weakref.WeakSet()
        self.peak_bytes = 0

    def __iter__(self):
        for start in range(0, self.total, self.chunk):
            index = torch.arange(start, min(start + self.chunk, self.total)) % len(self.x)
            x = self.x[index].clone()
            self.alive.add(x)
            live = sum(t.numel() * t.element_size() for t in self.alive)
            self.peak_bytes = max(self.peak_bytes, live)
            yield x, self.y[index]


def test_a_loader_larger_than_the_memory_budget_streams(digits_mlp):
    stream = _DigitStream(total=2400, chunk=40)
    loader = torch.utils.data.DataLoader(stream, batch_size=None)
    budget = 4 * 40 * 64 * 4  # four loader batches of float32 digits; the data are 15x that
    assert 2400 * 64 * 4 > 10 * budget
    result = evaluate(digits_mlp, loader, THREAT, attacks="fast", batch_size=64, seed=1, sanity=False)
    assert result.n == 2400 and result.x_adv is None and result.extras["engine"] == "batches"
    assert stream.peak_bytes <= budget, stream.peak_bytes
    x, y = _points(200)
    index = torch.arange(2400) % 200
    in_memory = evaluate(digits_mlp, x[index], y[index], THREAT, attacks="fast", batch_size=64,
                         seed=1, sanity=False, batches=True)
    _same([result], [in_memory])  # the same global batches, whatever the loader's batch size


def test_global_batches_do_not_depend_on_the_loader():
    x, y = _points(50)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    a = [(b.index, b.start, b.x) for b in iter_batches(loader, batch_size=16)]
    b = [(b.index, b.start, b.x) for b in iter_batches(x, y, batch_size=16)]
    assert [i[:2] for i in a] == [i[:2] for i in b] == [(0, 0), (1, 16), (2, 32), (3, 48)]
    assert all(torch.equal(p[2], q[2]) for p, q in zip(a, b))
    assert len(list(iter_batches(loader, batch_size=16, n=20))) == 2


@pytest.mark.parametrize("kernels", [dict(channels_last=True), dict(amp="bf16"),
                                     dict(compile="aot_eager")])
def test_opt_in_kernels_are_verified_in_float32(digits_cnn, digits, kernels):
    x, y = digits[2][:96], digits[3][:96]
    threat = ThreatModel("linf", 0.1)
    eager = evaluate(digits_cnn, x, y, threat, attacks="fast", sanity=False, seed=0, channels_last=False)
    fast = evaluate(digits_cnn, x, y, threat, attacks="fast", sanity=False, seed=0,
                    **{"channels_last": False, **kernels})
    assert torch.equal(fast.clean_correct, eager.clean_correct)  # the clean pass is float32 eager
    broken = fast.clean_correct & ~fast.robust_correct
    assert broken.any()
    with torch.no_grad():  # every example counted is adversarial for the float32 eager model
        wrong = digits_cnn(fast.x_adv[broken]).argmax(1) != y[broken]
    assert wrong.all() and threat.contains(x[broken], fast.x_adv[broken]).all()
    assert abs(fast.robust_accuracy - eager.robust_accuracy) <= 3 / 96
    assert next(digits_cnn.parameters()).is_contiguous()  # channels_last worked on a copy


def test_channels_last_by_default_where_it_pays(digits_cnn, digits_mlp, digits):
    """``channels_last="auto"``: on CPU for models with a max-pool, not for models without one
    or on CUDA; the result records the choice and the examples stay verified in float32."""
    from advlab.evaluation.kernels import default_channels_last
    from advlab.models import create_model
    from tests.conftest import _train

    pooled = _train(create_model("small_cnn", 10, (1, 8, 8), seed=0), digits[0], digits[1], epochs=5)
    assert default_channels_last(pooled, "cpu") and not default_channels_last(pooled, "cuda")
    assert not default_channels_last(digits_cnn, "cpu") and not default_channels_last(digits_mlp, "cpu")
    x, y = digits[2][:64], digits[3][:64]
    threat = ThreatModel("linf", 0.1)
    auto = evaluate(pooled, x, y, threat, attacks="fast", sanity=False, seed=0)
    off = evaluate(pooled, x, y, threat, attacks="fast", sanity=False, seed=0, channels_last=False)
    assert auto.clean_accuracy > 0.5 and (auto.clean_correct & ~auto.robust_correct).any()
    assert auto.extras["kernels"]["channels_last"] is True
    assert off.extras["kernels"]["channels_last"] is False
    mlp = evaluate(digits_mlp, digits[2][:32], digits[3][:32], threat, attacks="fast", sanity=False)
    assert mlp.extras["kernels"]["channels_last"] is False
    assert torch.equal(auto.clean_correct, off.clean_correct)
    assert abs(auto.robust_accuracy - off.robust_accuracy) <= 2 / 64
    broken = auto.clean_correct & ~auto.robust_correct
    with torch.no_grad():  # counted examples fool the float32 eager (contiguous) model
        assert (pooled(auto.x_adv[broken]).argmax(1) != y[broken]).all()
    assert next(pooled.parameters()).is_contiguous()
    with pytest.raises(ValueError, match="channels_last"):
        evaluate(pooled, x, y, threat, channels_last="yes")


def test_micro_batches_give_the_same_gradients(digits_cnn, digits):
    """The attack model's micro-batches are independent forwards: the same logits and per-sample
    input gradients as one pass, up to the rounding of another batch shape."""
    from advlab.evaluation.kernels import Kernels, accelerate, default_micro_batch

    assert default_micro_batch("cpu") == 64 and default_micro_batch("cuda") is None
    x = digits[2][:150].clone().requires_grad_(True)
    chunked = accelerate(digits_cnn, Kernels(micro_batch=64))
    calls = []
    hook = digits_cnn.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        logits = chunked(x)
    finally:
        hook.remove()
    assert calls == [64, 64, 22]
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    x_ref = digits[2][:150].clone().requires_grad_(True)
    ref = digits_cnn(x_ref)
    (grad_ref,) = torch.autograd.grad(ref.logsumexp(1).sum(), x_ref)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-6)
    assert accelerate(digits_cnn, Kernels(micro_batch=0)) is digits_cnn


def test_micro_batch_option(digits_cnn, digits):
    x, y = digits[2][:96], digits[3][:96]
    threat = ThreatModel("linf", 0.1)
    auto = evaluate(digits_cnn, x, y, threat, attacks="fast", sanity=False, seed=0)
    whole = evaluate(digits_cnn, x, y, threat, attacks="fast", sanity=False, seed=0, micro_batch=0)
    assert auto.extras["kernels"]["micro_batch"] == 64 and whole.extras["kernels"]["micro_batch"] is None
    assert torch.equal(auto.clean_correct, whole.clean_correct)
    assert abs(auto.robust_accuracy - whole.robust_accuracy) <= 2 / 96
    with pytest.raises(ValueError, match="micro_batch"):
        evaluate(digits_cnn, x, y, threat, micro_batch=-1)
    with pytest.raises(ValueError, match="micro_batch"):
        evaluate(digits_cnn, x, y, threat, micro_batch="big")


def test_bad_kernel_options(digits_mlp):
    x, y = _points(8)
    with pytest.raises(ValueError, match="'bf16' or 'fp16'"):
        evaluate(digits_mlp, x, y, THREAT, amp="int8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        evaluate(digits_mlp, x, y, THREAT, amp="fp16", sanity=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu_decisions(digits_mlp):
    x, y = _points(64)
    cpu = evaluate(digits_mlp, x, y, THREAT, attacks="fast", batch_size=32, batches=True, sanity=False)
    gpu = evaluate(digits_mlp, x, y, THREAT, attacks="fast", batch_size=32, batches=True, sanity=False,
                   device="cuda")
    assert torch.equal(gpu.clean_correct, cpu.clean_correct)
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= 3 / 64


def test_cli_resume_continues_and_refuses_without_the_flag(saved_mlp, monkeypatch):
    import contextlib
    import importlib

    from typer.testing import CliRunner

    from advlab.cli import app

    runner = CliRunner()
    monkeypatch.chdir(saved_mlp)
    args = ["evaluate", "net.py:make", "--weights", "w.pt", "--dataset", "digits", "--eps", "0.06",
            "--preset", "fast", "--points", "48", "--batch-size", "16", "--no-progress"]

    @contextlib.contextmanager
    def interrupting(*_args, **_kwargs):
        def tick(_name, _done):
            raise KeyboardInterrupt  # after the first batch was committed

        yield tick

    with monkeypatch.context() as patch:
        patch.setattr(importlib.import_module("advlab.cli.evaluate"), "attack_progress", interrupting)
        runner.invoke(app, [*args, "--out", "e.json"])
    assert len((saved_mlp / "e.json.partial").read_text().splitlines()) == 2
    refused = runner.invoke(app, [*args, "--out", "e.json"])
    assert refused.exit_code == 2 and "--resume" in refused.output
    other_preset = ["standard" if a == "fast" else a for a in args]
    other = runner.invoke(app, [*other_preset, "--out", "e.json", "--resume"])
    assert other.exit_code == 2 and "preset" in other.output
    resumed = runner.invoke(app, [*args, "--out", "e.json", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    fresh = runner.invoke(app, [*args, "--out", "f.json"])
    assert fresh.exit_code == 0, fresh.output
    a, b = (json.loads((saved_mlp / f).read_text()) for f in ("e.json", "f.json"))
    assert a[0]["robust_correct"] == b[0]["robust_correct"] and a[0]["n"] == 48
    assert not (saved_mlp / "e.json.partial").exists()
