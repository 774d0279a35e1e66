"""Where the driver's CPU goes per trial: `insgd-study launch` against a bare Ray Tune loop.

On a 2-core machine every millisecond of CPU the driver spends per trial is taken from
Tune's loop, Ray's processes or the trial itself, so the steady overhead of
`study_overhead.py` follows the driver's CPU. This splits it by thread: the main thread
(Tune's event loop, with the study's callbacks and searcher in a launch) and every other
thread of the process (Ray's own threads in both loops; in a launch also the writes
thread of `study.writes`, which runs the database and Optuna calls).

Per trial means *marginal*: each loop runs `--small` and `--large` one-epoch trials on
the same local Ray (the same configurations as `study_overhead.py`), and the figure is
(CPU of the large run - CPU of the small run) / (large - small), so each run's fixed
costs (the trial actor's start, the launch's set-up and end-of-study report) cancel.
Wall time is recorded per run but not compared: a new trial actor's start (seconds,
in another process) moves it more from run to run than 40 trials add.
Rounds alternate which loop and which size goes first; medians of the rounds. Both loops
start warm (`study_overhead.warm_up`, then one untimed two-trial launch).
CPU times are the process's (`getrusage`, which counts threads that have ended) and the
main thread's own clock (`time.thread_time`).

Usage: python benchmarks/driver_cpu.py [--small 20] [--large 60] [--rounds 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_overhead  # noqa: E402

LOOPS = ("launch", "bare")
PARTS = ("process", "main_thread", "other_threads")


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread's, ended ones too
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], Any]) -> dict[str, float]:
    """CPU seconds of the process and of the main thread, and wall seconds, of `run()`."""
    process, main, wall = _process_cpu(), time.thread_time(), time.perf_counter()
    run()
    process, main = _process_cpu() - process, time.thread_time() - main
    return {
        "process": process,
        "main_thread": main,
        "other_threads": process - main,
        "wall": time.perf_counter() - wall,  # recorded, not compared: see the docstring
    }


def measure(small: int, large: int, rounds: int) -> dict[str, Any]:
    """Marginal ms per trial of each part, per loop: medians over `rounds`."""
    study_overhead.start_quiet_ray()
    import ray

    marginal: dict[str, list[dict[str, float]]] = {loop: [] for loop in LOOPS}
    measured: list[dict[str, Any]] = []  # every timed run, for the record
    try:
        with tempfile.TemporaryDirectory(prefix="insgd-driver-cpu-") as tmp:
            workdir = Path(tmp)
            url = f"sqlite:///{workdir / 'studies.db'}"
            study_overhead.warm_up(workdir)
            # one untimed launch: the study's own modules and first-use costs are paid
            study_overhead.run_launch(url, workdir, "warm-launch", 2, 1, 256)
            configs: dict[int, list[dict[str, Any]]] = {}
            runs = 0
            for index in range(rounds):
                sizes = (small, large) if index % 2 == 0 else (large, small)
                seen: dict[str, dict[int, dict[str, float]]] = {loop: {} for loop in LOOPS}
                for size in sizes:
                    # launch first where bare needs its configurations, else alternate
                    order = LOOPS if size not in configs or index % 2 == 0 else LOOPS[::-1]
                    for loop in order:
                        runs += 1
                        name = f"{loop}-{runs}"
                        if loop == "launch":

                            def run(size: int = size, name: str = name) -> None:
                                _, trials = study_overhead.run_launch(
                                    url, workdir, name, size, 1, 256
                                )
                                configs[size] = study_overhead._configs(trials)

                        else:
                            logging.getLogger("ray").setLevel(logging.ERROR)

                            def run(size: int = size, name: str = name) -> None:
                                study_overhead.run_bare(configs[size], workdir, name)

                        seen[loop][size] = timed(run)
                        measured.append({"loop": loop, "trials": size, **seen[loop][size]})
                for loop in LOOPS:
                    big, little = seen[loop][large], seen[loop][small]
                    marginal[loop].append(
                        {p: (big[p] - little[p]) / (large - small) * 1e3 for p in PARTS}
                    )
    finally:
        ray.shutdown()
    result: dict[str, Any] = {
        loop: {p: statistics.median(r[p] for r in rows) for p in PARTS}
        for loop, rows in marginal.items()
    }
    result.update(
        benchmark="driver_cpu",
        small=small,
        large=large,
        rounds=marginal,
        runs=measured,
        cpus=os.cpu_count(),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20, help="trials of the small runs")
    parser.add_argument("--large", type=int, default=60, help="trials of the large runs")
    parser.add_argument("--rounds", type=int, default=4, help="repeats; medians are reported")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.small < 2 or args.large <= args.small or args.rounds < 1:
        print("driver_cpu: needs 2 <= --small < --large and --rounds >= 1", file=sys.stderr)
        return 2
    out = measure(args.small, args.large, args.rounds)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"driver CPU per one-epoch trial (ms; marginal between {args.small} and "
        f"{args.large} trials, medians of {args.rounds} rounds, {os.cpu_count()} CPUs)"
    )
    print(f"{'':22}" + "".join(f"{p:>15}" for p in PARTS))
    for label, loop in zip(("insgd-study launch", "bare Tuner"), LOOPS, strict=True):
        print(f"{label:22}" + "".join(f"{out[loop][p]:15.2f}" for p in PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
