"""One module per `insgd-study` subcommand.

Each module exposes `register(subparsers)` which adds its parser and sets
`func=run` where `run(args) -> int` does the work. Modules are imported by
`study.cli` in the order of `COMMANDS`; keeping them separate means the heavy
imports (torch, ray, optuna) of one command never slow down another.
"""

COMMANDS: tuple[str, ...] = (
    "train",
    "launch",
    "query",
    "report",
    "dashboard",
    "db",
)
