"""The `insgd-study` command line: a thin dispatcher over `study.commands`.

Every user-fixable problem ends as one line on stderr and exit code 2 (argparse's
multi-line usage dump is replaced by a single line); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from study.commands import COMMANDS
from study.errors import UsageError

PROG = "insgd-study"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG,
        description="Hyperparameter studies of INSGD (Input Normalized SGD) on Ray Tune + Optuna.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"study.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from storage.errors import ClaimLost, DatabaseUnavailable, StorageError

    try:
        return int(args.func(args) or 0)
    except (DatabaseUnavailable, ClaimLost) as exc:  # not bad input: stopped mid-way
        sys.stderr.write(f"{PROG} {args.command}: error: {_one_line(exc)}\n")
        return 1
    except (UsageError, ValueError, FileNotFoundError, StorageError) as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {_one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
        return 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
