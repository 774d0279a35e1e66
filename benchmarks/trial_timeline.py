"""Where a trial's steady overhead goes: each step of the trial cycle, ours vs bare Tune.

`study_overhead.py` gives one steady figure per loop (the gap between trial completions
less the trial's training). This script splits that gap into its steps, with time
stamps on both sides of each trial: Tune callbacks in the driver (trial start, result,
completion) and the trial function's entry on the worker (same machine, same clock):

- handoff: previous trial complete -> this trial started (Tune's step, our callbacks
  and searcher);
- dispatch: trial started -> its function running on the worker (the reset actor gets
  its task);
- run: function entry -> its last result in the driver, less the training epochs;
- finish: last result -> trial complete;
- steady: previous complete -> this complete, less the training epochs (the sum, and
  `study_overhead.py`'s figure); cycle: the same, epochs included;
- work: the training epochs (the trainer's own epoch seconds).

It runs `insgd-study launch` and the bare `Tuner` of `study_overhead.py` on the same
configurations, and with `--delay-writes MS` a third loop: launch with the driver's
queued writes started MS later than it starts them (from the end of the Tune step that
started the next trial), the experiment behind the README's "What remains". Loops
take turns going first from round to round; medians (and means) are pooled over every
trial of every round but each run's first two.

Usage: python benchmarks/trial_timeline.py [--trials 40] [--rounds 6] [--delay-writes 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_overhead  # noqa: E402

STEPS = ("handoff", "dispatch", "run", "finish", "steady", "cycle", "work")


def stamped(kind: str, folder: str) -> Any:
    """The loop's trainable, noting the time its function starts on the worker.

    Built here (in __main__) so that Ray pickles it by value: workers need not import
    this script. Each worker process appends to its own file in `folder`."""

    def trainable(config: dict[str, Any], templates: Any = None) -> None:
        entered = time.time()
        with open(os.path.join(folder, f"{kind}-{os.getpid()}.log"), "a") as log:
            log.write(f"{entered}\n")
        if kind == "launch":  # launch binds its templates (study.run.trainable.bind)
            from study.run.trainable import run_trial

            run_trial(config, templates)
        else:
            from ray import tune

            from trainers.config import TrainConfig
            from trainers.train import train

            train(TrainConfig.from_dict(config["train"]), lambda m: tune.report(m.to_dict()))

    return trainable


def stamps_callback(events: list[tuple[str, str, float, float]]) -> Any:
    """A Tune callback noting trial start, result and completion times (driver side)."""
    from ray import tune

    class Stamps(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            events.append(("start", trial.trial_id, time.time(), 0.0))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            events.append(("result", trial.trial_id, time.time(), result["epoch_seconds"]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            events.append(("complete", trial.trial_id, time.time(), 0.0))

    return Stamps()


def entries(folder: Path, kind: str) -> list[float]:
    """The worker-side function entries of one loop (read, then removed)."""
    out: list[float] = []
    for path in folder.glob(f"{kind}-*.log"):
        out += [float(line) for line in path.read_text().split()]
        path.unlink()
    return sorted(out)


def steps(events: list[tuple[str, str, float, float]], entered: list[float]) -> list[dict]:
    """Per trial (the third on), each step's seconds; see the module docstring."""
    trials: dict[str, dict[str, float]] = {}
    for event, trial_id, at, epoch_seconds in events:
        trial = trials.setdefault(trial_id, {"work": 0.0})
        if event == "result":
            trial["result"] = at
            trial["work"] += epoch_seconds
        else:
            trial[event] = at
    ordered = sorted(
        (t for t in trials.values() if {"start", "result", "complete"} <= t.keys()),
        key=lambda t: t["complete"],
    )
    rows = []
    for before, trial in zip(ordered, ordered[1:], strict=False):
        entry = next((e for e in entered if e >= trial["start"] - 0.002), None)
        if entry is None:
            continue
        cycle = trial["complete"] - before["complete"]
        rows.append(
            {
                "handoff": trial["start"] - before["complete"],
                "dispatch": entry - trial["start"],
                "run": trial["result"] - entry - trial["work"],
                "finish": trial["complete"] - trial["result"],
                "steady": cycle - trial["work"],
                "cycle": cycle,
                "work": trial["work"],
            }
        )
    return rows[1:]


def delayed_release(delay: float, plain: Any) -> Any:
    """`Recorder.on_step_end` starting the held writes `delay` seconds after the step that
    releases them (`plain`, the Recorder's own, at every other step)."""

    def on_step_end(self: Any, iteration: int, trials: list, **info: Any) -> None:
        if self._release_at_step_end:
            self._release_at_step_end = False
            self._held_since = None
            self.flush()
            threading.Timer(delay, self.writes.release).start()
        else:
            plain(self, iteration, trials, **info)

    return on_step_end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--delay-writes",
        type=float,
        metavar="MS",
        help="also run launch with its queued writes started MS milliseconds later",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.trials < 4 or args.rounds < 1 or (args.delay_writes or 0) < 0:
        print(
            "trial_timeline: --trials must be >= 4, --rounds >= 1, --delay-writes >= 0",
            file=sys.stderr,
        )
        return 2

    ray = study_overhead.start_quiet_ray()
    from ray import tune

    import study.run.recorder
    import study.run.trainable

    events: list[tuple[str, str, float, float]] = []
    plain_run_config, plain_step_end = tune.RunConfig, study.run.recorder.Recorder.on_step_end

    class RunConfig(plain_run_config):  # every loop's Tuner gets the stamps callback
        def __init__(self, *a: Any, callbacks: list | None = None, **k: Any) -> None:
            super().__init__(*a, callbacks=[stamps_callback(events), *(callbacks or [])], **k)

    loops = ["launch", "bare"] + (["launch_delayed"] if args.delay_writes is not None else [])
    pooled: dict[str, list[dict]] = {loop: [] for loop in loops}
    try:
        with tempfile.TemporaryDirectory(prefix="insgd-timeline-") as tmp:
            workdir = Path(tmp)
            url = f"sqlite:///{workdir / 'studies.db'}"
            study_overhead.warm_up(workdir)
            tune.RunConfig = RunConfig
            study.run.trainable.run_trial = stamped("launch", tmp)
            study_overhead.bare_trial = stamped("bare", tmp)
            # an untimed launch first: the configurations every loop runs
            _, trials = study_overhead.run_launch(url, workdir, "configs", args.trials, 1, 256)
            configs = study_overhead._configs(trials)
            entries(workdir, "launch")
            for index in range(args.rounds):
                order = loops[index % len(loops) :] + loops[: index % len(loops)]
                for loop in order:
                    events.clear()
                    if loop == "bare":
                        study_overhead.run_bare(configs, workdir, f"bare-{index}")
                    else:
                        study.run.recorder.Recorder.on_step_end = (
                            delayed_release(args.delay_writes / 1000, plain_step_end)
                            if loop == "launch_delayed"
                            else plain_step_end
                        )
                        _, trials = study_overhead.run_launch(
                            url, workdir, f"{loop}-{index}", args.trials, 1, 256
                        )
                        if study_overhead._configs(trials) != configs:
                            raise SystemExit("launch sampled other configurations")
                    rows = steps(events, entries(workdir, "bare" if loop == "bare" else "launch"))
                    pooled[loop] += rows
                    if not args.json:
                        print(f"round {index + 1}/{args.rounds} {loop}: " + _line(rows))
    finally:
        tune.RunConfig = plain_run_config
        study.run.recorder.Recorder.on_step_end = plain_step_end
        ray.shutdown()
    result = {
        loop: {
            step: {
                "median_ms": 1000 * statistics.median(r[step] for r in rows),
                "mean_ms": 1000 * statistics.mean(r[step] for r in rows),
            }
            for step in STEPS
        }
        | {"trials": len(rows)}
        for loop, rows in pooled.items()
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\npooled over {args.rounds} round(s) of {args.trials} trials: median (mean) ms")
    print(f"{'':16}" + "".join(f"{step:>16}" for step in STEPS))
    for loop, row in result.items():
        cells = "".join(f"{row[s]['median_ms']:>8.2f} ({row[s]['mean_ms']:5.2f})" for s in STEPS)
        print(f"{loop:16}{cells}")
    return 0


def _line(rows: list[dict]) -> str:
    return ", ".join(f"{s} {1000 * statistics.median(r[s] for r in rows):.2f}" for s in STEPS)


if __name__ == "__main__":
    sys.exit(main())
