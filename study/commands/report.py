"""`insgd-study report`: how each variant holds up as the learning rate moves.

Every argument is checked before the database is opened, so a typo costs
nothing and writes nothing. The report reads our results tables; unless
`--no-attach`, it also attaches itself (a note and the figures) to the Optuna
study of the same name, so optuna-dashboard shows it next to Optuna's plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from study.analysis.options import DEFAULT_BINS, DEFAULT_LEVELS, DEFAULT_TOLERANCE
from study.commands import add_storage_option
from study.errors import UsageError

FORMATS = ("table", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="robustness-to-learning-rate report of a study (table, JSON, figures, HTML)",
        description=(
            "Compare SGD, the INSGD variants and their frozen-normalizer controls: over how "
            "many decades of lr each keeps a --levels fraction of its gain over chance "
            "(censored where the range reaches the edge of the lrs studied), the best lr "
            "and accuracy, the largest lr that still trains, divergence, the accuracy "
            "averaged over log10(lr), bootstrap intervals over seeds, and parameter "
            "importances."
        ),
    )
    add_storage_option(parser)
    parser.add_argument("--study", required=True, metavar="NAME", help="the study to report on")
    parser.add_argument(
        "--levels",
        default=",".join(f"{q:g}" for q in DEFAULT_LEVELS),
        metavar="Q,Q,...",
        help="lr ranges: keep this fraction of each variant's gain over chance, "
        "each in (0, 1) (default %(default)s)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        metavar="T",
        help="the JSON's older lr_window_decades: accuracy within T (a fraction) of the "
        f"best (default {DEFAULT_TOLERANCE}, one accuracy point)",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=DEFAULT_BINS,
        metavar="K",
        help=f"log-spaced lr bins for non-grid studies (default {DEFAULT_BINS})",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="also write PNG figures, report.html and report.json into DIR",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="stdout format (default table)"
    )
    parser.add_argument(
        "--no-attach",
        action="store_true",
        help="do not attach the report to the Optuna study (read-only run)",
    )
    parser.add_argument(
        "--artifact-dir",
        default=None,
        metavar="DIR",
        help="artifact store for the attached figures (default: "
        "$INSGD_ARTIFACT_DIR, else <sqlite db dir>/artifacts, else ./artifacts)",
    )
    parser.set_defaults(func=run)


def validate(args: argparse.Namespace) -> Path | None:
    """Check every argument before anything is opened; returns the resolved --out."""
    if not args.study or not args.study.strip():
        raise UsageError("--study must name a study")
    if not math.isfinite(args.tolerance) or not 0.0 <= args.tolerance < 1.0:
        raise UsageError(
            f"--tolerance must be >= 0 and < 1 (a fraction of accuracy); got {args.tolerance!r}"
        )
    args.levels = parse_levels(args.levels)
    if args.bins < 2:
        raise UsageError(f"--bins must be an integer >= 2; got {args.bins}")
    if args.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    if args.artifact_dir is not None:
        writable_dir(args.artifact_dir, "--artifact-dir")
    return writable_dir(args.out, "--out") if args.out is not None else None


def parse_levels(value: str | tuple[float, ...]) -> tuple[float, ...]:
    """`--levels 0.5,0.9`: numbers in (0, 1), none twice, sorted."""
    if isinstance(value, tuple):
        return value
    texts = [part.strip() for part in str(value).split(",")]
    levels = []
    for text in texts:
        try:
            q = float(text)
        except ValueError:
            raise UsageError(
                f"--levels must be comma-separated numbers in (0, 1) like 0.5,0.9; got {value!r}"
            ) from None
        if not math.isfinite(q) or not 0.0 < q < 1.0:
            raise UsageError(
                f"--levels: each level must be > 0 and < 1 (a fraction of the gain over "
                f"chance); got {text}"
            )
        levels.append(q)
    if len({f"{q:g}" for q in levels}) != len(levels):
        raise UsageError(f"--levels names a level twice: {value}")
    return tuple(sorted(levels))


def writable_dir(value: str, flag: str) -> Path:
    """A directory we may write into: an existing writable one, or one we can create."""
    if not value.strip():
        raise UsageError(f"{flag} must name a directory")
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {value} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {value} is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {value} cannot be created ({parent} is not writable)")
    return path


def run(args: argparse.Namespace) -> int:
    out_dir = validate(args)
    from study.analysis.dashboard import (
        attach_report_to_optuna,
        optuna_study_exists,
        write_report_files,
    )
    from study.analysis.report import render_text, report_json
    from study.analysis.robustness import build_report
    from study.credentials import resolve_storage_url

    url = resolve_storage_url(args.storage)
    report = build_report(
        url, args.study, tolerance=args.tolerance, bins=args.bins, levels=args.levels
    )
    figures = write_report_files(report, out_dir) if out_dir is not None else {}
    if args.format == "json":
        text = json.dumps(report_json(report, figures), indent=2, allow_nan=False) + "\n"
    else:
        text = render_text(report)
        if out_dir is not None:
            text += f"\nFigures and report.html written to {out_dir}\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `report ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if args.no_attach or not optuna_study_exists(url, args.study):
        return 0
    try:
        if out_dir is not None:
            attached = attach_report_to_optuna(
                url, args.study, report, out_dir, artifact_dir=args.artifact_dir
            )
        else:
            with tempfile.TemporaryDirectory(prefix="insgd-report-") as tmp:
                write_report_files(report, Path(tmp))
                attached = attach_report_to_optuna(
                    url, args.study, report, tmp, artifact_dir=args.artifact_dir
                )
    except Exception as exc:  # noqa: BLE001 - the report itself is done; attaching is a bonus
        sys.stderr.write(
            f"insgd-study report: warning: could not attach the report to the Optuna study: "
            f"{' '.join(str(exc).split()) or type(exc).__name__}\n"
        )
        return 0
    sys.stderr.write(
        f"attached the report note and {len(attached)} files to Optuna study {args.study!r} "
        "(see `insgd-study dashboard`)\n"
    )
    return 0
