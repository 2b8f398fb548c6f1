"""``reconciler audit`` and ``report`` run in the test's process, as reconciler.cli.main runs them."""

from __future__ import annotations

import argparse

from reconciler.cli.audit import add_subcommands
from reconciler.errors import UsageError


def run_command(capsys, *argv: str) -> tuple[int, str]:
    """The command's exit status (a UsageError is 2) and everything it printed, the error included,
    captured from stdout."""
    parser = argparse.ArgumentParser(prog="reconciler")
    add_subcommands(parser.add_subparsers())
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except UsageError as error:
        print(f"reconciler: {error}")
        code = 2
    return code, capsys.readouterr().out
