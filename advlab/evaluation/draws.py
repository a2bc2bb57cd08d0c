"""Deciding correctness on a randomised model: a majority vote over several forward draws.

A randomised model (input noise, random transforms, dropout left on) answers differently on
every pass, so a single pass decides a point by a coin flip, and every extra attack of an
ensemble is another flip: robust accuracy is biased down even when nothing can move (eps = 0).
:class:`Judge` decides every prediction of an evaluation -- the clean pass and every candidate
adversarial example -- by a majority vote over ``draws`` forward passes (AutoAttack-rand,
Croce & Hein 2020, also averages several passes), and uses *common random numbers*: each vote
re-seeds the global torch generator (restored afterwards) and runs the model on the full set of
points in the clean pass's layout, with the candidates in their rows. A candidate equal to its
clean input therefore gets exactly the clean decision, and a tiny perturbation almost always
does, so at eps -> 0 robust accuracy equals clean accuracy. The expected accuracy over draws
(the share of passes that classify a point correctly, averaged over points) is reported next
to the vote, with a 95 % interval over points.

Shapes: ``x`` ``(N, ...)``, ``y`` ``(N,)``; ``index`` ``(A,)`` rows of ``x``; ``x_adv`` ``(A, ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from advlab.attacks._core import model_guard, predict


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global torch generator(s) of ``device`` seeded with ``seed``; restored on exit."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def mean_interval(share: Tensor) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of per-point values ``share`` ``(N,)`` in [0, 1] and its
    95 % normal interval over points (clamped to [0, 1])."""
    n = share.numel()
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = share.float().mean().item()
    sd = share.float().std().item() if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return (mean, max(0.0, mean - half), min(1.0, mean + half))


class Judge:
    """Decides predictions for one evaluation: one pass on a deterministic model (``draws=1``),
    a seeded majority vote over ``draws`` passes on a randomised one (ties go to the lower class).
    """

    def __init__(self, model: nn.Module, x: Tensor, *, draws: int = 1, seed: int = 0,
                 batch_size: int = 500) -> None:
        self.model, self.x, self.draws, self.seed, self.batch_size = model, x, draws, seed, batch_size

    @property
    def voting(self) -> bool:
        return self.draws > 1

    def counts(self, full: Tensor) -> Tensor:
        """``(N, K)`` votes per class over ``draws`` seeded passes on ``full`` ``(N, ...)``."""
        votes: Tensor | None = None
        with model_guard(self.model), _seeded(self.seed, full.device):
            for _ in range(self.draws):
                logits = predict(self.model, full, self.batch_size)
                if votes is None:
                    votes = torch.zeros_like(logits, dtype=torch.float32)
                votes.scatter_add_(1, logits.argmax(dim=1, keepdim=True),
                                   torch.ones(len(full), 1, device=full.device))
        assert votes is not None
        return votes

    def clean(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(correct (N,) bool, share (N,))`` of the clean points; ``logits`` of one plain pass."""
        if not self.voting:
            correct = logits.argmax(dim=1) == y
            return correct, correct.float()
        votes = self.counts(self.x)
        return votes.argmax(dim=1) == y, votes.gather(1, y[:, None]).squeeze(1) / self.draws

    def wrong(self, index: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """``(A,)`` bool: the candidates ``x_adv`` for rows ``index`` are misclassified (``y`` (A,))."""
        if not self.voting:
            with model_guard(self.model):
                return predict(self.model, x_adv, self.batch_size).argmax(dim=1) != y
        full = self.x.clone()
        full[index] = x_adv.to(full.dtype)
        votes = self.counts(full)[index]
        unchanged = (x_adv == self.x[index]).flatten(1).all(dim=1)
        return (votes.argmax(dim=1) != y) & ~unchanged

    def share(self, x_adv: Tensor, y: Tensor) -> Tensor:
        """``(N,)`` share of the ``draws`` passes that classify ``x_adv`` ``(N, ...)`` as ``y``."""
        votes = self.counts(x_adv)
        return votes.gather(1, y[:, None]).squeeze(1) / self.draws
