"""The evaluation record: what :func:`advlab.evaluate` returns, stores and exports as JSON."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab._utils import atomic_write_json, json_safe


@dataclass
class EvaluationResult:
    """Robustness of one model on one set of points under one threat model (one eps).

    Per-sample fields have length N (the number of evaluated points).

    Attributes:
        clean_accuracy / robust_accuracy: fractions in [0, 1].
        robust_correct: ``(N,)`` bool, correct and not broken by any attack of the ensemble.
        clean_correct: ``(N,)`` bool.
        broken_by: ``(N,)`` name of the attack whose example counts (None if none).
        distance: ``(N,)`` norm of the smallest verified adversarial perturbation found (inf if
            none; for a misclassified clean point 0).
        per_attack: name -> {"ran_on", "breaks", "time_s"} at this eps.
        warnings: sanity flags (dicts with code, detail, meaning, advice).
        draws: forward passes per prediction (a majority vote; 1 for a deterministic model).
        expected_accuracy: randomised models only: ``{"clean": [mean, low, high], "robust":
            [...]}``, the share of draws that classify a point correctly (at its returned
            example for "robust"), averaged over points, with a 95 % interval over points.
        x_adv: the adversarial examples (x where none) -- kept in memory, not in JSON.
    """

    norm: str
    eps: float
    preset: str
    clean_accuracy: float
    robust_accuracy: float
    clean_correct: Tensor
    robust_correct: Tensor
    broken_by: list[str | None]
    distance: Tensor
    per_attack: dict[str, dict[str, float]]
    warnings: list[dict[str, str]]
    time_s: float
    seed: int
    n: int
    model_id: str
    data_id: str
    version: str
    bounds: tuple[float, float] = (0.0, 1.0)
    draws: int = 1
    expected_accuracy: dict[str, list[float]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    x_adv: Tensor | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        """One line: the threat, n, clean and robust accuracy, the preset and the verdict."""
        return (f"EvaluationResult({self.norm} eps={self.eps:g}, n={self.n}, clean "
                f"{self.clean_accuracy:.1%}, robust {self.robust_accuracy:.1%}, preset "
                f"{self.preset!r}, verdict {self.verdict!r})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tensors become lists, inf becomes null); no adversarial images."""
        record = {k: v for k, v in asdict(self).items() if k != "x_adv"}
        return json_safe(record)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output (round trip, nulls back to inf)."""
        data = dict(record)
        data["clean_correct"] = torch.tensor(data["clean_correct"], dtype=torch.bool)
        data["robust_correct"] = torch.tensor(data["robust_correct"], dtype=torch.bool)
        data["distance"] = torch.tensor([float("inf") if d is None else d for d in data["distance"]])
        data["bounds"] = tuple(data["bounds"])
        data.pop("x_adv", None)
        return cls(**data)

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` atomically."""
        return atomic_write_json(path, self.to_dict())

    @property
    def verdict(self) -> str:
        """``"reliable"`` when no sanity flag was raised, else ``"suspicious: <codes>"``.

        Every flag of :data:`advlab.evaluation.FLAGS` counts (a flag is raised only when the
        number may be wrong); the codes are listed in the order they were raised.
        """
        codes = list(dict.fromkeys(w["code"] for w in self.warnings))
        return "reliable" if not codes else "suspicious: " + ", ".join(codes)

    def summary(self) -> str:
        """One line: eps, clean and robust accuracy, and which attack broke how many."""
        breaks = ", ".join(f"{k} {int(v['breaks'])}" for k, v in self.per_attack.items())
        expected = ""
        if self.expected_accuracy:
            mean, low, high = self.expected_accuracy["robust"]
            expected = f" (vote over {self.draws} draws; expected {mean:.1%} [{low:.1%}, {high:.1%}])"
        return (f"{self.norm} eps={self.eps:g}: clean {self.clean_accuracy:.1%}  robust "
                f"{self.robust_accuracy:.1%}{expected}  ({breaks}; {self.time_s:.1f}s)")


def fingerprint_model(model: nn.Module) -> str:
    """A short sha256 of the model's parameters and buffers (its identity in records)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_data(x: Tensor, y: Tensor) -> str:
    """A short sha256 of the evaluated inputs and labels."""
    digest = hashlib.sha256()
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

