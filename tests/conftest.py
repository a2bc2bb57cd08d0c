"""Shared test fixtures: tiny models and the scikit-learn digits, all seeded and CPU-only.

The trained fixtures use a bare PyTorch loop on purpose, so attack tests do not depend on
``advlab.training``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

# One thread: the test models are tiny, and intra-op threading only adds overhead for them.
torch.set_num_threads(1)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    return x, y


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 1397 / 400 digits, x in [0, 1] of shape (N, 1, 8, 8)."""
    x, y = _digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1397], y[:1397], x[1397:], y[1397:]


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for idx in perm.split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def make_mlp(seed: int = 0, hidden: int = 64, in_dim: int = 64, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def make_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="session")
def digits_mlp(digits) -> nn.Module:
    """An MLP trained on digits, in eval mode (the tests that need its accuracy assert it)."""
    x_tr, y_tr, _, _ = digits
    return _train(make_mlp(), x_tr, y_tr)


@pytest.fixture(scope="session")
def digits_cnn(digits) -> nn.Module:
    """A small CNN trained on digits, in eval mode (the tests that need its accuracy assert it)."""
    x_tr, y_tr, _, _ = digits
    return _train(make_cnn(), x_tr, y_tr, epochs=20)


@pytest.fixture()
def tiny_model() -> nn.Module:
    """An untrained 5-class MLP (16 -> 12 -> 5) on (B, 1, 4, 4) inputs, for fast property tests."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))
