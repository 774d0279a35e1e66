"""`insgd-study dashboard`: optuna-dashboard on the study database, bound to localhost.

The dashboard shows Optuna's view of every study (history, slice, contour,
importance plots) plus the robustness report that `report` and `launch`
attach to each study as a note and artifacts. It has no authentication and can
delete studies, hence 127.0.0.1 unless the user asks for another address.
"""

from __future__ import annotations

import argparse
import sys

from study.analysis.dashboard import DEFAULT_HOST, DEFAULT_PORT
from study.commands import add_storage_option
from study.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve optuna-dashboard on the study database (localhost by default)",
        description="Serve optuna-dashboard on the results database until Ctrl-C.",
    )
    add_storage_option(parser)
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 exposes "
        "the dashboard, which has no authentication, to the network)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--artifact-dir",
        default=None,
        metavar="DIR",
        help="artifact store the reports were attached to (default: "
        "$INSGD_ARTIFACT_DIR, else <sqlite db dir>/artifacts, else ./artifacts)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be in 1..65535; got {args.port}")
    if not args.host or not args.host.strip() or any(c.isspace() for c in args.host):
        raise UsageError(f"--host must be an address or host name; got {args.host!r}")
    from storage import open_database
    from study.analysis.dashboard import serve
    from study.commands.report import writable_dir
    from study.credentials import resolve_storage_url

    if args.artifact_dir is not None:
        writable_dir(args.artifact_dir, "--artifact-dir")
    url = resolve_storage_url(args.storage)
    open_database(url, upgrade=False)  # a missing/outdated database: one line, exit 2
    try:
        serve(url, args.host, args.port, artifact_dir=args.artifact_dir)
    except KeyboardInterrupt:
        sys.stderr.write("insgd-study dashboard: stopped\n")
    return 0
