"""FAB-T of advlab against the reference implementation's (``pyautoattack``), same model and points.

A small digits CNN (trained here, seed 0, on 1400 digits), the next 200 digits, AutoAttack's
FAB-T settings (100 steps, 9 target classes, one run per target, ``alpha_max`` 0.1, ``eta``
1.05, ``beta`` 0.9). Robust accuracy of each, recounted from the returned examples (inside the
ball and the box, misclassified), the points only one side broke, and the time of each call.

    PYTHONPATH=$PWD benchmarks/.venv-peers/bin/python benchmarks/fab_reference.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from advlab import ThreatModel
from advlab.attacks import fab

NORMS = {"l1": "L1", "l2": "L2", "linf": "Linf"}


def digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:1600]], y[perm[1400:1600]]


def train_cnn(x: Tensor, y: Tensor, epochs: int = 30) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def robust(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, threat: ThreatModel, clean: Tensor) -> Tensor:
    with torch.no_grad():
        wrong = model(x_adv).argmax(dim=1) != y
    return clean & ~(wrong & threat.contains(x, x_adv, atol=1e-5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eps", default="l1=1,l2=0.5,linf=0.1", help="norm=eps pairs")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pyautoattack.fab_pt import FABAttack_PT

    x_train, y_train, x, y = digits_split()
    model = train_cnn(x_train, y_train)
    with torch.no_grad():
        clean = model(x).argmax(dim=1) == y
    print(f"digits CNN, {len(x)} points, clean {clean.float().mean():.3f}")
    for pair in args.eps.split(","):
        norm, eps = pair.split("=")
        threat = ThreatModel(norm, float(eps))
        start = time.perf_counter()
        ours = robust(model, x, y, fab(model, x, y, threat, target="top"), threat, clean)
        ours_s = time.perf_counter() - start
        reference = FABAttack_PT(model, norm=NORMS[norm], n_restarts=1, n_iter=100, eps=float(eps), seed=0,
                                 targeted=True, n_target_classes=9, device="cpu")
        start = time.perf_counter()
        theirs = robust(model, x, y, reference.perturb(x, y), threat, clean)
        theirs_s = time.perf_counter() - start
        print(f"{norm} eps {eps}: advlab FAB-T robust {ours.float().mean():.3f} ({ours_s:.1f} s), reference "
              f"{theirs.float().mean():.3f} ({theirs_s:.1f} s); only the reference broke "
              f"{int((ours & ~theirs).sum())}, only advlab broke {int((theirs & ~ours).sum())}")


if __name__ == "__main__":
    main()
