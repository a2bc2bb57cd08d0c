"""Helpers shared by the training tests: a simulated kill, weight vectors and a torchrun launcher.

The torchrun scripts that tests write to disk import this module too (``run_torchrun`` puts
``tests/`` on their ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class Crash:
    """Forwards to a training objective and raises on its ``at``-th call (a simulated kill).

    ``objective`` is a registered objective (its hooks -- bind, state_dict, epoch_end, ... --
    are forwarded) or, when omitted, :func:`advlab.training.standard_objective`.
    """

    def __init__(self, objective=None, at: int | None = None) -> None:
        self.objective, self.at, self.calls = objective, at, 0

    def __call__(self, model, x, y):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt("simulated kill")
        if self.objective is None:
            from advlab.training import standard_objective

            return standard_objective(model, x, y)
        return self.objective(model, x, y)

    def __getattr__(self, name):
        if self.objective is None:
            raise AttributeError(name)
        return getattr(self.objective.function, name)


def flat_params(model: nn.Module) -> torch.Tensor:
    """All of ``model``'s parameters as one detached vector."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_env() -> dict[str, str]:
    """This process's environment without torchrun's variables, one thread, advlab and tests/
    importable."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


def torchrun_command(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]


def run_torchrun(*args: str, cwd: Path, timeout: float = 280) -> str:
    """Run ``torchrun --nproc_per_node=2 ARGS`` (a script and its arguments, or ``-m advlab``
    ...); assert it succeeded and return its standard output."""
    done = subprocess.run(torchrun_command(*args), env=torchrun_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def trained_mlp(dataset: str, widths: tuple[int, ...], steps: int, weight_decay: float,
                seed: int) -> nn.Module:
    """A registry MLP on ``dataset`` trained with a plain full-batch Adam loop (eval mode)."""
    from advlab.data import load_dataset
    from advlab.models import create_model

    data = load_dataset(dataset, "train")
    info = data.info
    model = create_model("mlp", info.num_classes, info.input_shape, normalize=(info.mean, info.std),
                         widths=widths, seed=seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(data.x), data.y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def flag_codes(result) -> list[str]:
    """The codes of the sanity flags an evaluation raised, in order."""
    return [w["code"] for w in result.warnings]


def user_model_forms(root: Path, source: str, module_name: str, build, x: torch.Tensor,
                     y: torch.Tensor, *, steps: int, transform=None, names: dict[str, str]):
    """Write ``source`` as ``root/names["module"]``, import it, train ``build(module)`` with Adam
    for ``steps`` full-batch steps on ``(transform(x), y)``, and save the trained weights in every
    form a user may bring: safetensors, a state dict (``torch.save``), TorchScript and a
    ``torch.export`` archive, under the file names ``names`` gives (keys ``module``,
    ``safetensors``, ``state``, ``script``, ``export``). Returns ``(module, model)`` in eval mode."""
    import importlib.util

    from safetensors.torch import save_file

    (root / names["module"]).write_text(source)
    spec = importlib.util.spec_from_file_location(module_name, root / names["module"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = build(module)
    inputs = x if transform is None else transform(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), y).backward()
        opt.step()
    model.eval()
    save_file(model.state_dict(), root / names["safetensors"])
    torch.save(model.state_dict(), root / names["state"])
    torch.jit.save(torch.jit.trace(model, x[:2]), root / names["script"])
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)),
                      root / names["export"])
    return module, model


def sigkill_after_epoch(victim: subprocess.Popen, checkpoint: Path, *, epoch: int = 1,
                        timeout: float = 120) -> int:
    """SIGKILL ``victim`` as soon as ``checkpoint`` records ``epoch`` (or after ``timeout``
    seconds, or when it ends by itself); returns its exit code (``-SIGKILL`` when killed)."""
    import signal
    import time

    from advlab.training import load_checkpoint

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and victim.poll() is None:
        if checkpoint.exists() and load_checkpoint(checkpoint)["epoch"] >= epoch:
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    return victim.wait(timeout=30)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block (as each torchrun worker runs), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
