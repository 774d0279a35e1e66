"""`insgd-study query`: the trials of the results database as a table, CSV or JSON.

Read-only: the database is opened with `upgrade=False` (an outdated schema is an
error naming `insgd-study db upgrade`, a missing SQLite file is never created),
and every flag is checked before it is opened. `--where` takes only the columns
of `storage.queries.FILTER_COLUMNS`; values are parsed by the column's type
and always sent as bound parameters, never pasted into SQL.

`--format json` is a contract scripts rely on: a list with one object per
trial carrying the keys of `storage.queries.JSON_KEYS` (`val_accuracy` is the
final validation accuracy, a fraction in [0, 1]).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from study.commands import add_storage_option

FORMATS = ("table", "csv", "json")
# The columns of `--format table` (every JSON key would not fit a terminal):
# (header, TrialRow attribute, format spec, right-aligned).
TABLE_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("study", "study", "s", False),
    ("trial", "trial_number", "d", True),
    ("state", "state", "s", False),
    ("opt", "optimizer", "s", False),
    ("norm", "norm", "s", False),
    ("variant", "variant", "s", False),
    ("lr", "lr", ".4g", True),
    ("eps", "eps", ".3g", True),
    ("beta", "beta", ".3g", True),
    ("seed", "seed", "d", True),
    ("val_acc", "final_val_accuracy", ".4f", True),
    ("best_acc", "best_val_accuracy", ".4f", True),
    ("diverged", "diverged", "yn", False),
    ("early", "stopped_early", "yn", False),
    ("epochs", "epochs_completed", "d", True),
    ("host", "hostname", "s", False),
    ("wall_s", "wall_seconds", ".2f", True),
)
# Kept literal (not imported) so that building the parser never imports SQLAlchemy;
# a test checks it against storage.queries.FILTER_COLUMNS.
WHERE_HELP_COLUMNS = (
    "study trial_number state optimizer norm normalizer granularity lr eps beta momentum "
    "weight_decay batch_size seed model dataset epochs_planned epochs_completed val_accuracy "
    "best_val_accuracy final_train_loss diverged stopped_early wall_seconds node_id hostname "
    "device_name variant"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="list the trials of the results database (table, CSV or JSON)",
        description=(
            "List trials from the results database, filtered with --where. "
            f"Filter and --order-by columns: {WHERE_HELP_COLUMNS}."
        ),
    )
    add_storage_option(parser)
    parser.add_argument("--study", default=None, metavar="NAME", help="only this study")
    parser.add_argument(
        "--where",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="keep trials where KEY=VALUE (also KEY!=, KEY>=, KEY<=, KEY>, KEY< for numbers); "
        "repeated equalities on one key mean any of them, everything else must all hold",
    )
    parser.add_argument(
        "--order-by",
        action="extend",
        nargs="+",
        default=[],
        metavar="COLUMN",
        help="sort by these columns (COLUMN:desc for descending); default: study, trial number",
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N trials")
    parser.add_argument(
        "--format", default="table", metavar="FORMAT", help="table (default), csv or json"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage import open_database, queries
    from study.credentials import resolve_storage_url
    from study.errors import UsageError

    if args.format not in FORMATS:
        raise UsageError(f"unknown --format {args.format!r}; choose from {', '.join(FORMATS)}")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
    if args.study is not None and not args.study.strip():
        raise UsageError("--study must name a study")
    filters = queries.parse_filters(args.where)
    for item in args.order_by:
        queries.parse_order(item)

    url = resolve_storage_url(args.storage)
    engine = open_database(url, upgrade=False)
    rows = queries.list_trials(
        engine, study=args.study, where=filters, order_by=args.order_by, limit=args.limit
    )
    if args.format == "json":
        text = render_json(rows)
    elif args.format == "csv":
        text = render_csv(rows, queries.JSON_KEYS)
    else:
        text = render_table(rows)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `insgd-study query | head`: the reader left, not an error
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def render_json(rows: Sequence[Any]) -> str:
    """A JSON list with one trial object per line: readable, and encoded by json's C
    encoder (an indented dump goes through the pure-Python one, 5x slower)."""
    if not rows:
        return "[]\n"
    objects = ",\n".join("  " + json.dumps(r.to_json_dict(), allow_nan=False) for r in rows)
    return "[\n" + objects + "\n]\n"


def render_csv(rows: Sequence[Any], keys: Sequence[str]) -> str:
    """One header line of JSON keys, one line per trial; empty cells for missing values."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = row.to_json_dict()
        writer.writerow({k: "" if record[k] is None else record[k] for k in keys})
    return out.getvalue()


def render_table(rows: Sequence[Any]) -> str:
    """Aligned columns for a terminal, with a count line at the end."""
    header = [name for name, _, _, _ in TABLE_COLUMNS]
    cells = [
        [_cell(getattr(row, attr), spec) for _, attr, spec, _ in TABLE_COLUMNS] for row in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, _, _, right) in zip(values, widths, TABLE_COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [line(header), line(["-" * w for w in widths])]
    lines += [line(c) for c in cells]
    lines.append(f"({len(rows)} trial{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "yn":
        return "yes" if value else "no"
    if spec == "s":
        from study.terminal import printable

        return printable(str(value))  # a newline in a host name must not split the row
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)
