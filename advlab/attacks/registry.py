"""Registry of attacks by name, in the spirit of timm's model registry.

``get_attack("pgd", steps=40)`` returns ``functools.partial(pgd, steps=40)``; names accept ``-``
or ``_`` and any case. Attack modules register themselves with :func:`register_attack`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from advlab.registry import MetadataView, Registry

F = TypeVar("F", bound=Callable[..., Any])

#: name -> attack function, with its ``kind`` as metadata.
ATTACKS: Registry[Callable[..., Any]] = Registry("attack")
#: name -> "bounded" (takes a ThreatModel, returns x_adv), "minimal" (no eps, returns x_adv of
#: minimal norm), "universal" (returns one perturbation) or "spatial". A view of ATTACKS.
ATTACK_KINDS: MetadataView = MetadataView(ATTACKS, "kind")


def register_attack(name: str, kind: str = "bounded", *, replace: bool = False) -> Callable[[F], F]:
    """Decorator adding an attack function to :data:`ATTACKS` under ``name``."""
    return ATTACKS.register(name, replace=replace, kind=kind)


def get_attack(name: str, **options: Any) -> Callable[..., Any]:
    """The attack registered as ``name`` with ``options`` bound as keyword defaults."""
    attack = ATTACKS.get(name)
    return functools.partial(attack, **options) if options else attack
