"""Argument checks shared by the whole library: one family, one wording of the errors.

Each check returns the value in its canonical form (an ``int``, a ``float``, a canonical choice)
or raises a ``ValueError`` that names the parameter, so callers write
``self.steps = check_int("steps", steps)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["check_choice", "check_int", "check_number"]


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``; a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None,
                 allow_zero: bool = False) -> float:
    """``value`` as a finite float, or a ValueError naming ``name``.

    Without ``minimum`` the value must be positive (``> 0``; ``>= 0`` with ``allow_zero``);
    with ``minimum`` it must be ``>= minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if minimum is not None:
        if not math.isfinite(number) or number < minimum:
            raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
        return number
    if not math.isfinite(number) or not (number >= 0 if allow_zero else number > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[str], *, fold: bool = False) -> str:
    """``value`` if it is one of ``choices``; a ValueError listing them otherwise.

    With ``fold`` the comparison ignores case, ``-``, ``_`` and spaces (``"one-cycle"`` matches
    ``"onecycle"``) and the matching choice is returned.
    """
    if fold and isinstance(value, str):
        wanted = _folded(value)
        for choice in choices:
            if _folded(choice) == wanted:
                return choice
    elif value in choices:
        return value
    raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _folded(text: str) -> str:
    return "".join(ch for ch in text.strip().lower() if ch not in "-_ ")
