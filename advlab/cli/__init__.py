"""The ``advlab`` command line (typer). One file per command; this module only wires them up."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import typer

from advlab.cli._common import user_errors
from advlab.cli.attack import attack
from advlab.cli.certify import certify
from advlab.cli.demo import demo
from advlab.cli.evaluate import evaluate
from advlab.cli.geometry import geometry
from advlab.cli.info import info
from advlab.cli.report import report
from advlab.cli.reproduce import reproduce
from advlab.cli.theory import theory_app
from advlab.cli.train import train

app = typer.Typer(
    name="advlab",
    help="Attack, defend, evaluate and explain the robustness of PyTorch classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name, _fn in [("demo", demo), ("info", info), ("train", train), ("attack", attack),
                   ("evaluate", evaluate), ("geometry", geometry), ("report", report),
                   ("certify", certify), ("reproduce", reproduce)]:
    app.command(_name)(user_errors(_fn))
app.add_typer(theory_app, name="theory", help="Theory experiments: random ReLU networks, spirals.")

#: Options that take several values after one flag (``--eps 0.05 0.1 0.2``).
MULTI_VALUE_OPTIONS = ("--eps",)


def expand_multi_values(args: Sequence[str]) -> list[str]:
    """Rewrite ``--eps 0.1 0.2`` as ``--eps 0.1 --eps 0.2`` (click options take one value each)."""
    out: list[str] = []
    current: str | None = None
    for arg in args:
        if arg in MULTI_VALUE_OPTIONS:
            current = arg
            out.append(arg)
            continue
        if current is not None and out[-1] != current and _is_number(arg):
            out.extend([current, arg])
            continue
        if not _is_number(arg):
            current = None
        out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point.

    Under torchrun (``WORLD_SIZE`` > 1) a finished command leaves through :func:`os._exit`
    after flushing logs and streams. ``fit`` has destroyed its process group by then and the
    run is saved, but Gloo's C++ threads can still abort the process in the interpreter's
    finalisation ("terminate called without an active exception", SIGABRT; PyTorch discusses
    it in pytorch/pytorch#179291). torchrun would then report the rank as failed and kill the
    others (seen twice in this project's fresh-clone test runs). Exit codes are kept.
    """
    try:
        app(args=expand_multi_values(sys.argv[1:] if argv is None else argv), prog_name="advlab")
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _exit_code(code: object) -> int:
    """``SystemExit.code`` as a process exit status (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
