"""``advlab attack`` under torchrun (2 processes, gloo, CPU): the batches are sharded, rank 0
writes the outputs once, and the adversarial examples are bit-identical to one process at the
same batch size (each batch's generator is seeded from the seed and the batch's index).

The digits MLP, 40 points and a 3-step PGD keep the torchrun run to seconds.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from test_eval_scale import NET, _run, _torchrun

from advlab.store import Store
from advlab.streams import PointStreams

ARGS = ["attack", "net.py:make", "--weights", "w.pt", "--dataset", "digits", "--attack", "pgd",
        "--eps", "0.1", "--param", "steps=3", "--param", "random_start=true", "--points", "40",
        "--batch-size", "16", "--seed", "5", "--no-progress"]


@pytest.fixture()
def saved(tmp_path, digits_mlp):
    (tmp_path / "net.py").write_text(NET)
    torch.save(digits_mlp.state_dict(), tmp_path / "w.pt")
    return tmp_path


@pytest.mark.timeout(300)
def test_torchrun_attack_matches_one_process_bit_for_bit(saved):
    stdout = _run(_torchrun("-m", "advlab", *ARGS, "--out", "ddp.npz"), saved)
    assert stdout.count("saved ") == 1  # rank 0 alone prints and writes
    _run([sys.executable, "-m", "advlab", *ARGS, "--out", "one.npz"], saved)
    ddp, one = np.load(saved / "ddp.npz"), np.load(saved / "one.npz")
    assert ddp["x_adv"].shape == (40, 1, 8, 8)
    for key in ("x", "x_adv", "y", "pred_clean", "pred_adv"):
        assert np.array_equal(ddp[key], one[key]), key
    assert not np.array_equal(ddp["x_adv"], ddp["x"])
    stores = list(saved.rglob("advlab.db"))
    assert len(stores) == 1
    with Store(stores[0]) as store:  # one row per command: rank 0 alone wrote it
        rows = store.get_evaluations(kind="attack")
    assert len(rows) == 2 and sorted(r["params"].get("world_size", 1) for r in rows) == [1, 2]


def test_each_point_has_its_own_stream(digits_mlp, digits):
    """The CLI's batches are the same as attacking each batch alone with the streams of its points."""
    from advlab import ThreatModel
    from advlab._dist import DistContext
    from advlab.attacks import pgd
    from advlab.cli.attack import sharded_attack

    x, y = digits[2][:40], digits[3][:40]
    threat = ThreatModel("linf", 0.1)

    def run(xb, yb, generator):
        return pgd(digits_mlp, xb, yb, threat, steps=3, random_start=True, generator=generator)

    done = []
    x_adv = sharded_attack(run, x, y, batch_size=16, seed=5, context=DistContext(), progress=done.append)
    assert done == [16, 16, 8]
    for start in range(0, 40, 16):
        alone = run(x[start:start + 16], y[start:start + 16], PointStreams(5, start, len(x[start:start + 16])))
        assert torch.equal(x_adv[start:start + 16], alone)
