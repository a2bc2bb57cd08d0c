"""advlab: attack, defend, evaluate and analyse the geometry of PyTorch classifiers.

Public API (stable names, see the "Python API" section of README.md)::

    from advlab import ThreatModel, evaluate, load_model, save_model, create_model, load_dataset
    import advlab.attacks
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

from advlab.threat import ThreatModel

# Heavier pieces are imported on first use so ``import advlab`` stays fast.
_LAZY = {
    "load_dataset": "advlab.data",
    "create_model": "advlab.models",
    "save_model": "advlab.models",
    "load_model": "advlab.models",
    "load_any_model": "advlab.models",
    "evaluate": "advlab.evaluation",
    "fit": "advlab.training",
    "Store": "advlab.store",
    "attacks": "advlab.attacks",
    "data": "advlab.data",
    "models": "advlab.models",
    "training": "advlab.training",
    "evaluation": "advlab.evaluation",
    "geometry": "advlab.geometry",
    "experiments": "advlab.experiments",
    "certify": "advlab.certify",
    "store": "advlab.store",
    "streams": "advlab.streams",
}

__all__ = ["ThreatModel", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if module.__name__ == f"advlab.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
