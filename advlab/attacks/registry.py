"""Registry of attacks by name, in the spirit of timm's model registry.

``get_attack("pgd", steps=40)`` returns ``functools.partial(pgd, steps=40)``; names accept ``-``
or ``_`` and any case. Attack modules register themselves with :func:`register_attack`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from advlab._utils import canonical_name

F = TypeVar("F", bound=Callable[..., Any])

#: name -> attack function. ``kind`` metadata lives in :data:`ATTACK_KINDS`.
ATTACKS: dict[str, Callable[..., Any]] = {}
#: name -> "bounded" (takes a ThreatModel, returns x_adv), "minimal" (no eps, returns x_adv of
#: minimal norm), "universal" (returns one perturbation) or "spatial".
ATTACK_KINDS: dict[str, str] = {}


def register_attack(name: str, kind: str = "bounded") -> Callable[[F], F]:
    """Decorator adding an attack function to :data:`ATTACKS` under ``name``."""

    def decorator(fn: F) -> F:
        key = canonical_name(name)
        ATTACKS[key] = fn
        ATTACK_KINDS[key] = kind
        return fn

    return decorator


def get_attack(name: str, **options: Any) -> Callable[..., Any]:
    """The attack registered as ``name`` with ``options`` bound as keyword defaults."""
    key = canonical_name(name)
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; available: {', '.join(sorted(ATTACKS))}")
    return functools.partial(ATTACKS[key], **options) if options else ATTACKS[key]
