"""A whole study fused and unfused: `insgd-study launch --fuse auto` vs `--fuse 1`.

Runs the same study (default: the default digits study, its 21-trial grid of digits + mlp,
8 epochs) through the real command (in-process `study.cli.main`, each launch into a
fresh SQLite file) on one local Ray started once, alternating the two arms over
`--rounds` rounds (first arm swapped every round), and reports two medians per arm and
their speedups: the launch (the command's wall time: creating the database and the
study, Tune's setup, the trials, the end-of-study report) and the trials end to end
(from the first trial's start to the last trial's end as the results table records them:
worker starts, training, every per-trial write), which is what fusing changes; the rest
is the same fixed cost in both arms. Both arms store the same trials (see
tests/study/test_study_fuse.py); the figure is what ``--fuse auto`` saves end to end:
training (a fused MLP computes K members per step) and per-trial overhead (one Ray
trial per bundle instead of per trial).

Usage: python benchmarks/fused_study.py [--rounds 3] [--epochs 8] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="launches per arm (default 3)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per trial (default 8)")
    parser.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="a 2x3 grid of 1 epoch, one round (smoke test)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def launch(folder: Path, name: str, fuse: str, study: list[str]) -> tuple[float, float, str]:
    """One launch of the study: its wall seconds, its trials' seconds end to end
    (`trials_seconds`) and the line saying how it ran."""
    from study import cli

    argv = [
        "launch",
        "--storage",
        f"sqlite:///{folder / f'{name}.db'}",
        "--name",
        name,
        "--results-dir",
        str(folder / "ray"),
        "--fuse",
        fuse,
        *study,
    ]
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"launch --fuse {fuse} exited {code}:\n{out.getvalue()[-2000:]}")
    plan = next((line for line in out.getvalue().splitlines() if "running" in line), "")
    return seconds, trials_seconds(f"sqlite:///{folder / f'{name}.db'}", name), plan


def trials_seconds(url: str, name: str) -> float:
    """First trial start to last trial end, from the study's results table."""
    import storage.queries
    from storage.engine import open_existing

    engine = open_existing(url)
    if engine is None:
        raise RuntimeError(f"no database at {url}")
    try:
        rows = storage.queries.list_trials(engine, name)
    finally:
        engine.dispose()
    starts = [r.started_at for r in rows if r.started_at is not None]
    ends = [r.finished_at for r in rows if r.finished_at is not None]
    if not starts or not ends:
        raise RuntimeError(f"study {name!r} recorded no trial times")
    return (max(ends) - min(starts)).total_seconds()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    rounds = 1 if args.quick else args.rounds
    epochs = 1 if args.quick else args.epochs
    study = ["--dataset", "digits", "--model", "mlp", "--epochs", str(epochs)]
    if args.quick:
        study += ["--norms", "none,l2", "--lr-points", "3"]
    cpus = args.cpus or os.cpu_count() or 1
    ray.init(
        num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    seconds: dict[str, list[float]] = {"1": [], "auto": []}
    trials: dict[str, list[float]] = {"1": [], "auto": []}
    plans: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fused-study-") as tmp:
            folder = Path(tmp)
            for r in range(rounds):
                order = ("1", "auto") if r % 2 == 0 else ("auto", "1")
                for fuse in order:
                    wall, phase, plans[fuse] = launch(folder, f"fuse-{fuse}-{r}", fuse, study)
                    seconds[fuse].append(wall)
                    trials[fuse].append(phase)
    finally:
        ray.shutdown()
    import torch

    median = {fuse: statistics.median(values) for fuse, values in seconds.items()}
    median_trials = {fuse: statistics.median(values) for fuse, values in trials.items()}
    return {
        "benchmark": "fused_study",
        "study": " ".join(study),
        "cpus": cpus,
        "rounds": rounds,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "plans": plans,
        "seconds": seconds,
        "median_seconds": median,
        "speedup": median["1"] / median["auto"],
        "trials_seconds": trials,
        "median_trials_seconds": median_trials,
        "trials_speedup": median_trials["1"] / median_trials["auto"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"study: {result['study']} on a local Ray of {result['cpus']} CPU(s)")
    for fuse in ("1", "auto"):
        seconds = result["median_seconds"][fuse]
        phase = result["median_trials_seconds"][fuse]
        print(
            f"  --fuse {fuse:<4} launch {seconds:6.1f} s, trials {phase:6.1f} s  "
            f"({result['plans'][fuse]})"
        )
    print(
        f"  speedup of --fuse auto: launch {result['speedup']:.2f}x, trials end to end "
        f"{result['trials_speedup']:.2f}x (medians of {result['rounds']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
