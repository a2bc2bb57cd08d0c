"""Every option of every advlab command passes through torchrun's own argument parser untouched.

torchrun (``torch.distributed.run``) parses its arguments with argparse, which accepts unique
prefixes of its options and refuses ambiguous ones anywhere on the command line, the script's
arguments included: ``torchrun ... -m advlab evaluate RUN --n 300`` fails with "ambiguous option:
--n could match --nnodes, --nproc-per-node, ...". The number of points is therefore ``--points``
(``--n`` stays an alias outside torchrun).
"""

from __future__ import annotations

import pytest
import typer.main
from torch.distributed.run import get_args_parser

from advlab.cli import app

TORCHRUN_ALIASES = {"--n"}  # aliases kept for plain runs; documented as not usable under torchrun


def _commands(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def _options():
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if getattr(param, "param_type_name", "") != "option":
                continue
            for opt in (*param.opts, *param.secondary_opts):
                if opt not in TORCHRUN_ALIASES:
                    yield path, opt


OPTIONS = list(_options())


def test_every_command_has_options_to_check():
    commands = {path for path, _ in OPTIONS}
    assert {("evaluate",), ("attack",), ("train",), ("certify",), ("geometry",)} <= commands
    assert (("evaluate",), "--points") in OPTIONS and (("attack",), "--points") in OPTIONS
    assert (("certify",), "--draws") in OPTIONS


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_torchrun_passes_every_option_through(form):
    parser = get_args_parser()
    swallowed = []
    for path, opt in OPTIONS:
        tail = [*path, "MODEL", *([opt, "1"] if form == "separate" else [f"{opt}=1"])]
        try:
            args = parser.parse_args(["--nproc_per_node=2", "--standalone", "-m", "advlab", *tail])
        except SystemExit:
            swallowed.append((" ".join(path), opt, "refused"))
            continue
        if args.training_script != "advlab" or args.training_script_args != tail or args.nproc_per_node != "2":
            swallowed.append((" ".join(path), opt, args.training_script_args))
    assert not swallowed, swallowed


def test_the_n_alias_is_what_torchrun_refuses(capsys):
    """The reason for --points: documented, and checked so that the docs stay true."""
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--nproc_per_node=2", "-m", "advlab", "evaluate", "R", "--n", "3"])
    assert "ambiguous option: --n" in capsys.readouterr().err


def test_points_and_n_are_the_same_option():
    command = dict(_commands(typer.main.get_command(app)))[("evaluate",)]
    param = next(p for p in command.params if p.name == "points")
    assert set(param.opts) == {"--points", "--n"}
