"""Helpers shared by the command-line commands: errors, logging, seeding, output paths, and the
MODEL / data options every command that loads a model takes (:func:`load_any_model`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

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
        except Exception as exc:
            if os.environ.get("ADVLAB_DEBUG") or not (
                    isinstance(exc, USER_ERRORS) or getattr(exc, "advlab_user_error", False)):
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
def attack_progress(desc: str = "attacking", *, enabled: bool = True, total: int | None = None
                    ) -> Iterator[Callable[[str, int], None]]:
    """A tqdm bar for :func:`advlab.evaluate`'s ``progress`` callback ``(attack, points done)``,
    with a ``total`` (and so an ETA) when given; log lines are printed above the bar, not glued
    onto it. ``enabled=False`` keeps the callback but shows nothing."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(desc=desc, unit="pt", disable=not enabled, leave=False, total=total)

    def tick(name: str, done: int) -> None:
        bar.set_postfix_str(name)
        if bar.total is not None and bar.n + done > bar.total:
            bar.total = bar.n + done  # the upper bound was passed: keep the ETA honest
        bar.update(done)

    try:
        with logging_redirect_tqdm():
            yield tick
    finally:
        bar.close()


# ----------------------------------------------------------------------------- MODEL and data
MODEL_HELP = (
    "The model: a run directory, a saved advlab model (.json/.safetensors), a TorchScript file, "
    "a torch.export .pt2 archive (each recognised by its content), or a factory "
    "path/to/file.py:Name or package.module:Name (a class or function returning an nn.Module; "
    "with --model-args and --weights). A .py factory RUNS that file's code."
)
WeightsOption = Annotated[Path | None, typer.Option(
    "--weights", help="Weights for a factory MODEL: safetensors, or a torch.save'd state dict "
    "(read with weights_only=True; nothing is unpickled).")]
ModelArgsOption = Annotated[str | None, typer.Option(
    "--model-args", help='JSON keyword arguments of the factory, e.g. \'{"width": 32}\'.')]
MeanOption = Annotated[list[float] | None, typer.Option(
    "--mean", help="Per-channel mean: wrap the model in Normalize (inputs stay in [0, 1]).")]
StdOption = Annotated[list[float] | None, typer.Option(
    "--std", help="Per-channel std, with --mean.")]
ImportOption = Annotated[list[str] | None, typer.Option(
    "--import", help="Import this module first (repeatable), e.g. the one whose "
    "@register_model builds a saved model. Runs its code.")]
DataOption = Annotated[Path | None, typer.Option(
    "--data", help="Your data instead of --dataset: an .npz (x_train/y_train/x_test/y_test, or "
    "x/y: then a seeded 20% test split is held out), a .pt/.safetensors dict of tensors, or an "
    "image folder root/<class>/*.png.")]
ImageSizeOption = Annotated[int | None, typer.Option(
    "--image-size", help="Resize the images of an image folder (--data) to N x N.")]


def parse_json_object(text: str | None, option: str = "--model-args") -> dict[str, Any] | None:
    """The JSON object given to ``option``, or None."""
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{option} takes a JSON object such as '{{\"width\": 32}}', got "
                         f"{text!r} ({err.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} takes a JSON object ({{...}}), got {type(value).__name__}")
    return value


@dataclass
class ModelOptions:
    """How to build a model that is not a run: the MODEL options of the commands."""

    weights: Path | None = None
    model_args: dict[str, Any] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    imports: list[str] = field(default_factory=list)


def model_options(weights: Path | None = None, model_args: str | None = None,
                  mean: list[float] | None = None, std: list[float] | None = None,
                  imports: list[str] | None = None) -> Any:
    """The command-line MODEL options as a :class:`ModelOptions`."""

    return ModelOptions(weights=weights, model_args=parse_json_object(model_args),
                        mean=list(mean) if mean else None, std=list(std) if std else None,
                        imports=list(imports or []))


def load_any_model(spec: str | Path, *, weights: Path | None = None,
                   model_args: str | dict[str, Any] | None = None,
                   mean: list[float] | None = None, std: list[float] | None = None,
                   imports: list[str] | None = None, device: str = "auto") -> Any:
    """Any MODEL form of the command line as an ``nn.Module`` in eval mode (for every command:
    evaluate, attack, geometry, train --init). ``model_args`` is a JSON string or a dict."""
    from advlab._utils import resolve_device
    from advlab.models import load_any_model as load

    args = parse_json_object(model_args) if isinstance(model_args, str) else model_args
    return load(spec, weights=weights, model_args=args, mean=mean or None, std=std or None,
                imports=imports or (), device=resolve_device(device))
