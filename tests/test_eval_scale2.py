"""Evaluation at scale, second part: the exported checkpoint errors, rank-local reading of a
map-style Dataset or an in-order DataLoader (each index read by exactly one rank under torchrun,
gloo, and the results bit-identical to one process), and the refusal of a shuffling loader under
a process group.

The torchrun tests start 2 processes on the digits MLP with 100 points.
"""

from __future__ import annotations

import json

import pytest
import torch
from harness import one_thread
from test_eval_scale import NET, _points, _run, _same, _torchrun

from advlab import ThreatModel, evaluate
from advlab._dist import DistContext
from advlab.evaluation import CheckpointExists, CheckpointMismatch
from advlab.evaluation.streaming import indexed_batches

THREAT = ThreatModel("linf", 0.06)


class Recording(torch.utils.data.Dataset):
    """Digits as a map-style dataset that records every index it is asked for."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.images, self.labels, self.reads = x, y, []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.reads.append(int(i))
        return self.images[i], self.labels[i]


READ_SCRIPT = """
import json, os, sys, torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from net import make
from advlab import ThreatModel, evaluate
from sklearn.datasets import load_digits


class Recording(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.images, self.labels, self.reads = x, y, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads.append(int(i))
        return self.images[i], self.labels[i]


torch.set_num_threads(1)
model = make()
model.load_state_dict(torch.load(sys.argv[1] + "/w.pt", weights_only=True))
bunch = load_digits()
x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)[1500:1600]
data = Recording(x, torch.tensor(bunch.target)[1500:1600])
if sys.argv[2] == "loader":
    data = torch.utils.data.DataLoader(data, batch_size=7)
dist.init_process_group("gloo")
results = evaluate(model.eval(), data, ThreatModel("linf", 0.06), eps=[0.03, 0.06], attacks="fast",
                   batch_size=16, seed=3)
rank = dist.get_rank()
with open(f"{sys.argv[1]}/reads-{sys.argv[2]}-{rank}.json", "w") as fh:
    json.dump(data.reads if sys.argv[2] == "dataset" else data.dataset.reads, fh)
if rank == 0:
    with open(f"{sys.argv[1]}/ddp-{sys.argv[2]}.json", "w") as fh:
        json.dump([r.to_dict() for r in results], fh)
dist.barrier()
dist.destroy_process_group()
os._exit(0)
"""


def test_exported_checkpoint_errors():
    from advlab.evaluation import resume

    assert CheckpointExists is resume.CheckpointExists and CheckpointMismatch is resume.CheckpointMismatch
    assert issubclass(CheckpointExists, ValueError) and issubclass(CheckpointMismatch, ValueError)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["dataset", "loader"])
def test_each_rank_reads_only_its_batches(tmp_path, digits_mlp, kind):
    (tmp_path / "net.py").write_text(NET)
    torch.save(digits_mlp.state_dict(), tmp_path / "w.pt")
    (tmp_path / "script.py").write_text(READ_SCRIPT)
    _run(_torchrun(str(tmp_path / "script.py"), str(tmp_path), kind), tmp_path)
    reads = [json.loads((tmp_path / f"reads-{kind}-{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(reads[0] + reads[1]) == list(range(100))  # each index read by exactly one rank
    assert set(reads[0]) == {i for b in range(0, 7, 2) for i in range(16 * b, min(16 * b + 16, 100))}
    from advlab.evaluation import EvaluationResult

    ddp = [EvaluationResult.from_dict(r) for r in json.loads((tmp_path / f"ddp-{kind}.json").read_text())]
    x, y = _points(100)
    with one_thread():
        single = evaluate(digits_mlp, x, y, THREAT, eps=[0.03, 0.06], attacks="fast", batch_size=16,
                          seed=3, batches=True)
    _same(ddp, single)
    assert ddp[0].extras["world_size"] == 2


def test_one_process_reads_every_index_once(digits_mlp):
    x, y = _points(40)
    data = Recording(x, y)
    result = evaluate(digits_mlp, data, THREAT, attacks="fast", batch_size=16, seed=1, sanity=False)
    assert sorted(data.reads) == list(range(40))  # batch 0 too: read for the setup, not again
    plain = evaluate(digits_mlp, x, y, THREAT, attacks="fast", batch_size=16, seed=1, sanity=False,
                     batches=True)
    _same([result], [plain])


def test_indexed_reading_follows_the_loader():
    x, y = _points(50)
    data = Recording(x, y)
    ordered = indexed_batches(torch.utils.data.DataLoader(data, batch_size=7), batch_size=16, n=45)
    assert ordered is not None and ordered.count == 3 and not ordered.shared
    batches = list(ordered.read([2, 0]))
    assert [(b.index, b.start, len(b.x)) for b in batches] == [(2, 32, 13), (0, 0, 16)]
    assert torch.equal(batches[0].x, x[32:45]) and data.reads == [*range(32, 45), *range(16)]
    for loader in (torch.utils.data.DataLoader(data, batch_size=7, shuffle=True),
                   torch.utils.data.DataLoader(data, batch_size=7, drop_last=True),
                   torch.utils.data.DataLoader(data, batch_size=None)):
        assert indexed_batches(loader, batch_size=16) is None  # a stream: iterated, never indexed


def test_a_shuffling_loader_is_refused_under_a_process_group(monkeypatch, digits_mlp):
    from advlab.evaluation import sharding

    monkeypatch.setattr(sharding, "current_context", lambda: DistContext(rank=0, world_size=2))
    x, y = _points(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        evaluate(digits_mlp, loader, THREAT, attacks="fast", batch_size=16, sanity=False)
