"""What the driver's writes cost per trial: the study's storage against Optuna's own.

In a launch, a one-epoch trial costs the driver's writes thread (`study.writes`) an
Optuna ask (the next configuration, asked ahead), a tell (the last intermediate value,
the user attributes, the outcome) and the results rows (the last epoch, the trial's end
and the next trial's start, one transaction). On a 2-core machine that CPU is what keeps
a study's per-trial cost above bare Ray Tune's (docs/performance.md), so this measures it
without Ray: the study's own `SeededSearch` (random sampler, asks ahead) and `Recorder`
driven as Tune drives them for one trial after another, their calls run inline, timed
on the thread's CPU clock.

Three arms side by side in one process, in blocks that rotate which goes first:
`DriverStorage` (`study.search.optuna_storage`, what a launch uses); the same code with every
prepared statement (`storage.prepared`) sent through SQLAlchemy's `Connection.execute`
instead of the DBAPI cursor, as before those statements were prepared (a no-op cursor
listener on its two engines makes `Prepared` take that path); and Optuna's own
`RDBStorage` (in Optuna's cache, as `optuna.create_study` wraps it). Each has its own
study in the same fresh SQLite file (or `--storage URL`, e.g. PostgreSQL: it adds three
studies named `writes-*` there). The results rows are the same code in all three (on
the cursor in the first and third, through `Connection.execute` in the second); they
are reported beside the Optuna calls. The JSON output also says how many trials each table
holds as finished at the end, so the figures are shown to be those of real writes.

Usage: python benchmarks/driver_writes.py [--trials 50] [--rounds 8] [--storage URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("ask", "tell", "rows")
STORAGES = ("driver", "core", "optuna")


class Arm:
    """One storage's study: its searcher and recorder, driven one trial at a time."""

    def __init__(self, url: str, kind: str, budget: int) -> None:
        import optuna

        import storage
        from study.config import merge
        from study.run.recorder import Recorder
        from study.run.runner import make_plan, optuna_rdb_storage
        from study.run.trial_config import TrialTemplates
        from study.search.optuna_storage import DriverStorage
        from study.search.samplers import make_sampler
        from study.search.searcher import METRIC, SeededSearch, StudyOptunaSearch
        from study.search.space import define_space

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        name = f"writes-{kind}-{uuid.uuid4().hex[:8]}"
        flags = {"name": name, "trials": budget, "sampler": "random", "sampler_seed": 0}
        flags.update(variants=("sgd", "insgd-l2"), lr_min=0.01, lr_max=0.1, epochs=1)
        self.config = merge(flags=flags).config
        engine = storage.open_database(url)
        writer = storage.ResultWriter(engine)
        writer.create_study(name, self.config.study_dict(), "benchmark")
        rdb = optuna_rdb_storage(url)
        optuna_storage = rdb if kind == "optuna" else DriverStorage(rdb)
        self.statements = 0  # those the cursor listener saw (the "core" arm's only)
        # the results engine is the process's one for the URL, shared by the arms: the
        # "core" arm's listener is there only while that arm runs (`running`)
        self._engines = (engine, rdb.engine) if kind == "core" else ()
        inner = StudyOptunaSearch(
            define_space(self.config),
            metric=METRIC,
            mode="max",
            sampler=make_sampler(self.config),
            study_name=name,
            storage=optuna_storage,
        )
        plan = make_plan(self.config, [], {})
        self.search = SeededSearch(
            inner,
            self.config,
            fixed=plan.groups,
            sample=plan.sample,
            budget=plan.budget,
            first_number=plan.first_number,
            ask_ahead=True,
        )
        self.recorder = Recorder(writer, name, 1, TrialTemplates.for_study(self.config))
        self.count = 0
        self.name, self.engine, self.optuna_storage = name, engine, optuna_storage

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the arm runs: the "core" arm's cursor listener on its engines."""
        from sqlalchemy import event

        for engine in self._engines:
            event.listen(engine, "before_cursor_execute", self._count)
        try:
            yield
        finally:
            for engine in self._engines:
                event.remove(engine, "before_cursor_execute", self._count)

    def _count(self, *_args: Any) -> None:
        """The "core" arm's cursor listener: its presence sends `Prepared` statements
        through `Connection.execute`; it counts them, to show they went that way."""
        self.statements += 1

    def trial(self) -> dict[str, float]:
        """One trial as Tune drives it: suggest (and ask ahead), start, result, end.
        Returns the seconds of thread CPU of each part."""
        clock = time.thread_time
        trial_id = f"t{self.count}"
        self.count += 1
        started = clock()
        config = self.search.suggest(trial_id)
        asked = clock()
        trial = SimpleNamespace(trial_id=trial_id, config=config, num_failures=0)
        self.recorder.on_trial_start(0, [], trial)
        self.recorder.on_step_end(0, [])  # the last trial's end and this start: one batch
        written = clock()
        result = {
            "epoch": 1,
            "train_loss": 0.4,
            "train_accuracy": 0.9,
            "val_loss": 0.3,
            "val_accuracy": 0.91,
            "lr": config["lr"],
            "epoch_seconds": 0.012,
            "images_per_second": 1.0e5,
            "diverged": False,
            "node_id": "0" * 56,
            "hostname": "benchmark",
            "device_name": "cpu",
            "resumed_from_epoch": 0,
            "time_total_s": 0.02,
        }
        trial.last_result = result
        noting = clock()  # the recorder's callbacks only note rows for the next batch
        self.recorder.on_trial_result(0, [], trial, result)
        self.recorder.on_trial_complete(0, [], trial)
        notes = clock() - noting
        told = clock()
        self.search.on_trial_result(trial_id, result)
        self.search.on_trial_complete(trial_id, result)
        done = clock()
        return {
            "ask": asked - started,
            "tell": done - told,
            "rows": written - asked + notes,
        }

    def close(self) -> dict[str, int]:
        """Write what is left; returns the trials each table holds as finished, so a run
        shows its figures are those of real writes."""
        import optuna

        import storage

        self.recorder.flush()
        rows = storage.queries.list_trials(self.engine, self.name)
        trials = optuna.load_study(study_name=self.name, storage=self.optuna_storage).trials
        return {
            "results_complete": sum(row.state == "COMPLETE" for row in rows),
            "optuna_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
            "statements_through_execute": self.statements,
        }


def measure(url: str, trials: int, rounds: int) -> dict[str, Any]:
    """`rounds` blocks of `trials` trials per arm, rotating which goes first."""
    budget = (rounds + 1) * trials
    arms = {kind: Arm(url, kind, budget) for kind in STORAGES}
    for arm in arms.values():  # warm: first statements compiled, Optuna's caches filled
        with arm.running():
            for _ in range(min(trials, 5)):
                arm.trial()
    per_block: dict[str, list[dict[str, float]]] = {kind: [] for kind in STORAGES}
    for block in range(rounds):
        shift = block % len(STORAGES)
        order = STORAGES[shift:] + STORAGES[:shift]
        if block // len(STORAGES) % 2:
            order = order[::-1]
        for kind in order:
            sums = dict.fromkeys(PARTS, 0.0)
            with arms[kind].running():
                for _ in range(trials):
                    for part, seconds in arms[kind].trial().items():
                        sums[part] += seconds
            per_block[kind].append({p: sums[p] / trials * 1e3 for p in PARTS})
    written = {}
    for kind, arm in arms.items():
        with arm.running():
            written[kind] = arm.close()
    for blocks in per_block.values():
        for b in blocks:
            b["total"] = sum(b[p] for p in PARTS)
    medians = {
        kind: {part: statistics.median(b[part] for b in blocks) for part in (*PARTS, "total")}
        for kind, blocks in per_block.items()
    }

    def ratios(over: str) -> list[float]:
        return [
            d["total"] / o["total"]
            for d, o in zip(per_block["driver"], per_block[over], strict=True)
        ]

    return {
        "benchmark": "driver_writes",
        "trials_per_block": trials,
        "rounds": rounds,
        "ms_per_trial": medians,
        "ratio_driver_over_optuna": statistics.median(ratios("optuna")),
        "ratio_blocks_over_optuna": ratios("optuna"),
        "ratio_driver_over_core": statistics.median(ratios("core")),
        "ratio_blocks_over_core": ratios("core"),
        "trials_written": written,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="trials per block (>= 1)")
    parser.add_argument("--rounds", type=int, default=8, help="blocks per arm (>= 1)")
    parser.add_argument("--storage", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.rounds < 1:
        print("driver_writes: --trials and --rounds must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        url = args.storage or f"sqlite:///{Path(folder) / 'writes.db'}"
        out = measure(url, args.trials, args.rounds)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"driver writes per one-epoch trial, thread CPU, medians of {args.rounds} "
        f"rotating blocks of {args.trials} trials (ms)"
    )
    print(f"{'storage':<28}" + "".join(f"{p:>8}" for p in (*PARTS, "total")))
    labels = {
        "driver": "DriverStorage (launch)",
        "core": "same, Connection.execute",
        "optuna": "Optuna's RDBStorage",
    }
    for kind in STORAGES:
        row = out["ms_per_trial"][kind]
        print(f"{labels[kind]:<28}" + "".join(f"{row[p]:>8.3f}" for p in (*PARTS, "total")))
    for label, key in (("Optuna's", "optuna"), ("Connection.execute", "core")):
        blocks = ", ".join(f"{r:.2f}" for r in out[f"ratio_blocks_over_{key}"])
        median = out[f"ratio_driver_over_{key}"]
        print(f"ratio DriverStorage / {label}: {median:.2f}x per block ({blocks})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
