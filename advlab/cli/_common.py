"""Helpers shared by the command-line commands: errors, logging, seeding, output paths."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: Exceptions that are the user's to fix: shown as one clear line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, TypeError, KeyError)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def user_errors(fn: F) -> F:
    """Decorator: turn the user's errors (bad names, missing files, bad values) into clear messages."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            if os.environ.get("ADVLAB_DEBUG"):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            fail(str(message))

    return wrapper  # type: ignore[return-value]


def setup_logging(*, verbose: bool = False) -> None:
    """Library logs at INFO (or DEBUG with ``--verbose``) on stderr, once."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("advlab").setLevel(level)


def runs_root(out: Path | None = None) -> Path:
    """Where runs, the store and reports live: ``out``, ``$ADVLAB_RUNS`` or ``./runs``."""
    if out is not None:
        return Path(out)
    return Path(os.environ.get("ADVLAB_RUNS", "runs"))


def seed_everything(seed: int) -> None:
    """Seed torch's global RNGs once, at the start of a command (the library never does)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_rank_zero() -> bool:
    """True unless this is a non-zero rank of a torchrun launch."""
    return os.environ.get("RANK", "0") == "0"


def echo(message: str = "", **style: Any) -> None:
    """Print on rank zero only."""
    if is_rank_zero():
        typer.secho(message, **style)


def parse_key_values(pairs: list[str] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs as typed options: values parsed as JSON when they parse
    (``0.1``, ``true``, ``[0.5, 1.0]``), else kept as text; ``-`` in keys becomes ``_``."""
    import json

    options: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE (e.g. --param steps=40), got {item!r}")
        lowered = text.strip().lower()
        try:
            value = json.loads(lowered if lowered in ("true", "false") else text)
        except json.JSONDecodeError:
            value = text
        if key in options and options[key] != value:
            raise ValueError(f"parameter {key!r} is given twice ({options[key]!r} and {value!r})")
        options[key] = value
    return options


@contextlib.contextmanager
def attack_progress(desc: str = "attacking", *, enabled: bool = True
                    ) -> Iterator[Callable[[str, int], None]]:
    """A tqdm bar for :func:`advlab.evaluate`'s ``progress`` callback ``(attack, points done)``;
    ``enabled=False`` keeps the callback but shows nothing."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="pt", disable=not enabled, leave=False)

    def tick(name: str, done: int) -> None:
        bar.set_postfix_str(name)
        bar.update(done)

    try:
        yield tick
    finally:
        bar.close()
