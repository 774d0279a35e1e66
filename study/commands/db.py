"""`insgd-study db`: create or migrate the results schema, and show its revision.

`db upgrade` applies the alembic migrations shipped inside the `storage`
package (no alembic.ini needed) to the database named by --storage; it is
what an `open_database(..., upgrade=False)` error tells a user to run, and the
step an administrator runs once before granting a read-only role. `db current`
only reads: it never creates a SQLite file or a table.
"""

from __future__ import annotations

import argparse
import sys

from study.commands import add_storage_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="manage the results database schema (upgrade, current)",
        description="Create or migrate the results schema, or show its revision.",
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION")
    actions.required = True
    upgrade = actions.add_parser(
        "upgrade",
        help="create the schema or migrate it to the newest revision",
        description="Create the results schema, or migrate it to the newest revision.",
    )
    current = actions.add_parser(
        "current",
        help="show the schema revision of the database and the one this code needs",
        description="Show the schema revision of the database (read-only).",
    )
    for sub in (upgrade, current):
        add_storage_option(sub)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage import mask_url, schema_status, upgrade
    from storage.urls import upgrade_command
    from study.credentials import resolve_storage_url

    url = resolve_storage_url(args.storage)
    shown = mask_url(url)
    if args.db_command == "upgrade":
        before, after = upgrade(url)
        if before == after:
            sys.stdout.write(f"{shown}: results schema already at {after}\n")
        else:
            sys.stdout.write(f"{shown}: results schema {before or '(none)'} -> {after}\n")
        return 0
    current, head = schema_status(url)
    if current == head:
        sys.stdout.write(f"{shown}: results schema at {current} (up to date)\n")
    else:
        sys.stdout.write(
            f"{shown}: results schema at {current or '(none)'}, this insgd-study needs {head}; "
            f"run {upgrade_command(url)}\n"
        )
    return 0
