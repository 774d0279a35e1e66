"""One module per `insgd-study` subcommand.

Each module exposes `register(subparsers)` which adds its parser and sets
`func=run` where `run(args) -> int` does the work. Modules are imported by
`study.cli` in the order of `COMMANDS`; keeping them separate means the heavy
imports (torch, ray, optuna) of one command never slow down another.
"""

from __future__ import annotations

import argparse

#: Every command resolves --storage the same way (`study.credentials.resolve_storage_url`),
#: so every command documents it with the same words.
STORAGE_HELP = (
    "results database URL, no password (default: $INSGD_STORAGE, a file named by "
    "$INSGD_STORAGE_FILE, else sqlite:///studies.db)"
)


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    """`--storage URL`, as every command that reads or writes the results database has it."""
    parser.add_argument("--storage", default=None, metavar="URL", help=STORAGE_HELP)


COMMANDS: tuple[str, ...] = (
    "train",
    "launch",
    "query",
    "report",
    "dashboard",
    "db",
)
