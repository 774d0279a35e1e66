"""`insgd-study launch [CONFIG.toml] [flags]`: run a whole study on Ray Tune with Optuna.

Flag names are a contract (scripts rely on them). Every flag defaults to "not given", so
the layering defaults < --preset < TOML < flags can tell what the user set, and
``--resume`` can refuse a given flag that contradicts the stored study.
"""

from __future__ import annotations

import argparse
from typing import Any

from study.commands import STORAGE_HELP
from study.errors import UsageError

# flag -> (StudyConfig key, argparse type, help)
_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    (
        "--storage",
        "storage",
        str,
        STORAGE_HELP,
    ),
    ("--name", "name", str, "study name (default: default)"),
    ("--dataset", "dataset", str, "dataset name (default: digits)"),
    ("--model", "model", str, "model name (default: mlp)"),
    ("--data-dir", "data_dir", str, "dataset folder (default $INSGD_DATA_DIR, else ./data)"),
    ("--epochs", "epochs", int, "epochs per trial (default: 8)"),
    ("--batch-size", "batch_size", int, "batch size (default: 64)"),
    (
        "--trials",
        "trials",
        int,
        "finished trials to end with (grid: omit it, the grid "
        "decides; with --trials and no --sampler: tpe)",
    ),
    (
        "--sampler",
        "sampler",
        str,
        "tpe | random | qmc | grid (default: grid without --trials, tpe with)",
    ),
    ("--sampler-seed", "sampler_seed", int, "seed of the Optuna sampler"),
    (
        "--variants",
        "variants",
        str,
        "what the study compares, comma-separated, side by side in one study: sgd, insgd-l1, "
        "insgd-l2, insgd-l1-frozen, insgd-l2-frozen (default: sgd,insgd-l1,insgd-l2). A "
        "-frozen variant is the frozen-normalizer control: INSGD with that norm whose "
        "normalizer (the input power P) is frozen after the first step (beta = 1.0), a fixed "
        "per-layer rescale of the lr that never adapts; set beside its INSGD variant it "
        "separates INSGD's adaptivity from a per-layer rescale",
    ),
    (
        "--norms",
        "norms",
        str,
        "shorthand for the first three variants: none (sgd), l1 (insgd-l1), l2 (insgd-l2); "
        "with --variants it must name the same ones",
    ),
    ("--lr-min", "lr_min", float, "smallest learning rate (default: 1e-3)"),
    ("--lr-max", "lr_max", float, "largest learning rate (default: 10)"),
    ("--lr-points", "lr_points", int, "grid: log-spaced learning rates (default: 7)"),
    ("--eps-min", "eps_min", float, "smallest INSGD eps (default: 1e-3)"),
    ("--eps-max", "eps_max", float, "largest INSGD eps (default: 1)"),
    (
        "--eps-points",
        "eps_points",
        int,
        "grid: log-spaced eps values (default: 1, the default eps 0.01)",
    ),
    ("--seeds", "seeds", int, "seeds per configuration, each a trial (default: 1)"),
    ("--scheduler", "scheduler", str, "fifo | asha (default: fifo)"),
    (
        "--max-concurrent",
        "max_concurrent",
        int,
        "most trials running at once (default: as resources allow)",
    ),
    (
        "--fuse",
        "fuse",
        str,
        "K | auto: train up to K configurations of the study as one fused model per Ray "
        "trial (every sampler, tpe asks K at once; FIFO only); auto picks K by model and "
        "device, see docs/studies.md (default: auto)",
    ),
    ("--cpus-per-trial", "cpus_per_trial", float, "CPUs per trial (default: 1)"),
    (
        "--gpus-per-trial",
        "gpus_per_trial",
        float,
        "GPUs per trial, at most 1; fractions pack trials on one GPU (default: 0)",
    ),
    ("--max-failures", "max_failures", int, "restarts of a trial whose worker died (default: 3)"),
    (
        "--address",
        "address",
        str,
        "join this Ray cluster (HOST:PORT or auto) instead of starting a local Ray",
    ),
    (
        "--results-dir",
        "results_dir",
        str,
        "Ray Tune's experiment folder, shared storage on a cluster (default: ~/ray_results)",
    ),
    (
        "--db-retry-seconds",
        "db_retry_seconds",
        float,
        "how long the driver's writes wait for an unavailable database (server restarting "
        "or unreachable, connection reset, SQLite locked) while trials keep training; past "
        "it the launch stops with exit code 1 and --resume finishes the study "
        "(0: no retry; default: 120)",
    ),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="run a study (Ray Tune + Optuna); the default is the demo grid",
        description="Run a study of INSGD vs SGD on Ray Tune with Optuna. Precedence: "
        "defaults < --preset < CONFIG.toml < flags.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "config_file", nargs="?", metavar="CONFIG.toml", help="study configuration file (TOML)"
    )
    parser.add_argument("--preset", help="named preset from study.presets (e.g. default)")
    for flag, key, kind, text in _FLAGS:
        parser.add_argument(flag, dest=key, type=kind, help=text)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study: its RUNNING trials become FAIL "
        "and their configurations run again",
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray's own output")
    parser.set_defaults(func=run)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as StudyConfig keys (argparse.SUPPRESS hides the rest)."""
    given = {key: getattr(args, key) for _, key, _, _ in _FLAGS if hasattr(args, key)}
    for key in ("resume", "verbose"):
        if getattr(args, key, False):
            given[key] = True
    if "variants" in given:
        from study.config import parse_variants

        given["variants"] = parse_variants(given["variants"])
    if "fuse" in given:
        from study.config import parse_fuse

        given["fuse"] = parse_fuse(given["fuse"])
    if "norms" in given:
        from study.config import parse_norms

        given["norms"] = parse_norms(given["norms"])
    return given


def merged_config(args: argparse.Namespace) -> Any:
    """Validate preset + TOML + flags into a MergedConfig (UsageError on bad input)."""
    from study.config import load_toml, merge, normalize_mapping
    from study.presets import PRESETS

    preset = None
    name = getattr(args, "preset", None)
    if name is not None:
        if name not in PRESETS:
            raise UsageError(
                f"--preset: unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
            )
        preset = normalize_mapping(PRESETS[name], source=f"preset {name!r}")
    config_file = getattr(args, "config_file", None)
    toml = load_toml(config_file) if config_file else None
    return merge(preset=preset, toml=toml, flags=flag_values(args))


def run(args: argparse.Namespace) -> int:
    from study.run.runner import run_study

    return run_study(merged_config(args))
