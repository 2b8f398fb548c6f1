"""The command line: `reconciler` and its subcommands, one module per command group."""

from reconciler.cli.main import main

__all__ = ["main"]
