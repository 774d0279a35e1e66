"""What `insgd-study launch` costs per trial on top of a bare Ray Tune loop.

Runs the same N trivial trials (digits + mlp, 1 epoch) three ways on one local Ray:

1. through `insgd-study launch` (in-process `study.cli.main`, the real command: Optuna
   asks/tells on its RDB storage, the driver writes every trial and epoch to the results
   database, each epoch is checkpointed, progress lines are printed);
2. through a bare `Tuner` over the same configurations: a function trainable calling
   `trainers.train` with `tune.report`, no search algorithm, no database, no checkpoints.

3. through a `Tuner` with Tune's own `OptunaSearch` on an Optuna `RDBStorage` in a fresh
   SQLite file (random sampler, the same norms and lr range, no database of ours, no
   checkpoints): the floor of the design the study service is specified on, so the
   figures separate what Optuna's storage costs from what our own code adds.

All use actor reuse, the same resources and one trial at a time (so a trial's overhead
is not hidden behind another's work). Reported per trial:

- total overhead = (wall time of the run - training work) / N, where the work is the sum
  of the trainer's own epoch times; it includes starting the trial actor and importing
  torch there once per run;
- steady overhead = the median gap between consecutive trial completions minus the
  trial's work (trials 2..N: the cost of one more trial on a warm, reused actor).

Every loop starts warm (the libraries all of them use imported, one throwaway Tuner run
first), and `--rounds R` repeats the three loops R times, one after another, in an order
that alternates from round to round, and reports the medians: on a shared VM one run's
ratio moves by +-0.2 from noise alone. The steady figure is also given for all rounds'
gaps pooled (`steady_pooled`): each loop's median gap, their ratio and its 90% interval
from resampling whole rounds.

Usage: python benchmarks/study_overhead.py [--trials 20] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_trial(config: dict[str, Any]) -> None:
    """The bare Tune trainable: train and report each epoch, nothing else."""
    from ray import tune

    from trainers.config import TrainConfig
    from trainers.train import train

    train(TrainConfig.from_dict(config["train"]), lambda m: tune.report(m.to_dict()))


def optuna_trial(config: dict[str, Any]) -> None:
    """The Tune + OptunaSearch trainable: the base config with the sampled norm and lr."""
    from ray import tune

    from trainers.config import TrainConfig
    from trainers.train import train

    params = {**config["base"], "norm": config["norm"], "lr": config["lr"]}
    if config["norm"] == "none":
        params.update(optimizer="sgd", norm="l2")  # how the study runs its SGD baseline
    else:
        params["optimizer"] = "insgd"
    train(TrainConfig.from_dict(params), lambda m: tune.report(m.to_dict()))


def run_launch(
    url: str, workdir: Path, name: str, trials: int, epochs: int, batch_size: int
) -> tuple[float, list[dict[str, Any]]]:
    """`insgd-study launch` with N random-search trials; returns wall time and the trials."""
    import storage
    from study import cli

    argv = [
        "launch",
        "--storage",
        url,
        "--name",
        name,
        "--sampler",
        "random",
        "--sampler-seed",
        "0",
        "--trials",
        str(trials),
        "--variants",
        "sgd,insgd-l2",
        "--lr-min",
        "0.01",
        "--lr-max",
        "0.1",
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        "--max-concurrent",
        "1",
        # one trial per Ray trial, as the bare loops run them (fusion is fused_study.py's)
        "--fuse",
        "1",
        "--results-dir",
        str(workdir / name),
    ]
    started = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"launch failed with exit code {code}")
    engine = storage.open_database(url)
    epochs_by_trial: dict[int, float] = {}
    for row in storage.queries.study_epochs(engine, name):
        epochs_by_trial[row.trial_number] = epochs_by_trial.get(row.trial_number, 0.0) + (
            row.epoch_seconds or 0.0
        )
    out = []
    for row in storage.queries.list_trials(engine, name, order_by="trial_number"):
        out.append(
            {
                "work": epochs_by_trial.get(row.trial_number, 0.0),
                "done": row.finished_at.timestamp(),
                "params": row.params,
            }
        )
    return wall, out


def timing_callback() -> Any:
    """A Tune callback noting each trial's training seconds and completion time.

    Built in a function so that Ray is imported only once the benchmark starts it."""
    from ray import tune

    class Times(tune.Callback):
        def __init__(self) -> None:
            self.done: dict[str, float] = {}
            self.work: dict[str, float] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tid = trial.trial_id
            self.work[tid] = self.work.get(tid, 0.0) + result["epoch_seconds"]

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done[trial.trial_id] = time.time()

        def trials(self) -> list[dict[str, float]]:
            order = sorted(self.done, key=self.done.get)
            return [{"work": self.work[t], "done": self.done[t]} for t in order]

    return Times()


def run_bare(
    configs: list[dict[str, Any]], workdir: Path, name: str
) -> tuple[float, list[dict[str, Any]]]:
    """A bare Tuner over the same TrainConfigs; a callback only notes completion times."""
    from ray import tune

    times = timing_callback()
    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(bare_trial, {"cpu": 1}),
        param_space={"train": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(
            name=name, storage_path=str(workdir / name), verbose=0, callbacks=[times]
        ),
    )
    tuner.fit()
    wall = time.perf_counter() - started
    return wall, times.trials()


def run_optuna_tuner(
    base: dict[str, Any], trials: int, workdir: Path, name: str
) -> tuple[float, list[dict[str, Any]]]:
    """`Tuner` + `OptunaSearch` on an RDBStorage: Optuna asks, reports and tells per trial."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from study.run.runner import optuna_rdb_storage

    times = timing_callback()
    db = workdir / f"{name}.db"
    with sqlite3.connect(db) as conn:  # WAL, as the results database has (storage.engine)
        conn.execute("PRAGMA journal_mode = WAL")
    started = time.perf_counter()
    search = OptunaSearch(
        {
            "norm": optuna.distributions.CategoricalDistribution(["none", "l2"]),
            "lr": optuna.distributions.FloatDistribution(0.01, 0.1, log=True),
        },
        metric="val_accuracy",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        study_name=name,
        storage=optuna_rdb_storage(f"sqlite:///{db}"),
    )
    tuner = tune.Tuner(
        tune.with_resources(optuna_trial, {"cpu": 1}),
        param_space={"base": base},
        tune_config=tune.TuneConfig(
            search_alg=search, num_samples=trials, reuse_actors=True, max_concurrent_trials=1
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(workdir / name), verbose=0, callbacks=[times]
        ),
    )
    tuner.fit()
    wall = time.perf_counter() - started
    return wall, times.trials()


def noop_trial(config: dict[str, Any]) -> None:
    """The warm-up trainable: one report, no work."""
    from ray import tune

    tune.report({"done": 1})


def warm_up(workdir: Path) -> None:
    """One untimed one-trial Tuner: Tune's lazily imported driver code is loaded for all."""
    from ray import tune

    tune.Tuner(
        noop_trial,
        run_config=tune.RunConfig(name="warm", storage_path=str(workdir / "warm"), verbose=0),
    ).fit()


def steady_gaps(trials: list[dict[str, Any]]) -> list[float]:
    """Each trial's completion less the one before, less its own work (trials 2..N)."""
    done = sorted(t["done"] for t in trials)
    return [b - a - t["work"] for a, b, t in zip(done, done[1:], trials[1:], strict=False)]


def summarize(wall: float, trials: list[dict[str, Any]], gaps: list[float]) -> dict[str, float]:
    """A loop's figures from its wall time, its trials and their `steady_gaps`."""
    work = sum(t["work"] for t in trials)
    return {
        "trials": len(trials),
        "wall_s": wall,
        "work_s": work,
        "total_overhead_per_trial_s": (wall - work) / len(trials),
        "steady_overhead_per_trial_s": statistics.median(gaps) if gaps else float("nan"),
    }


#: The TrainConfig fields the bare loops take from the trials launch ran.
CONFIG_KEYS = (
    "dataset",
    "model",
    "data_dir",
    "optimizer",
    "norm",
    "eps",
    "lr",
    "epochs",
    "batch_size",
    "seed",
    "device",
)
LOOPS = ("insgd_study_launch", "bare_tuner", "tuner_with_optuna_rdb")


def run_round(
    workdir: Path,
    url: str,
    index: int,
    args: argparse.Namespace,
    configs: list[dict[str, Any]] | None,
) -> tuple[dict[str, Any], dict[str, list[float]], list[dict[str, Any]]]:
    """The three loops, one after another, on the same configurations; returns their
    figures, their steady gaps and the configurations launch ran.

    The order alternates (launch, bare, Optuna in even rounds; Optuna, bare, launch in
    odd ones), so that no loop always runs first, right after the previous round's
    teardown. Launch samples the same configurations every round (random sampler, seed
    0): an odd round's bare loop runs the previous round's.
    """
    runs: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    for name in LOOPS if index % 2 == 0 else LOOPS[::-1]:
        if name == "insgd_study_launch":
            runs[name] = run_launch(
                url, workdir, f"overhead-{index}", args.trials, args.epochs, args.batch_size
            )
            ran = _configs(runs[name][1])
            if configs is not None and ran != configs:
                raise SystemExit("launch sampled other configurations than the round before")
            configs = ran
            continue
        assert configs is not None  # round 0 runs launch first
        logging.getLogger("ray").setLevel(logging.ERROR)
        if name == "bare_tuner":
            runs[name] = run_bare(configs, workdir, f"bare-{index}")
        else:
            runs[name] = run_optuna_tuner(configs[0], args.trials, workdir, f"optuna-{index}")
    assert configs is not None
    gaps = {name: steady_gaps(runs[name][1]) for name in LOOPS}
    return {name: summarize(*runs[name], gaps[name]) for name in LOOPS}, gaps, configs


def pooled_steady(gaps: list[dict[str, list[float]]], resamples: int = 2000) -> dict[str, Any]:
    """The steady figure of all rounds together: each loop's median of every round's
    gaps, the ratio ours / bare of those medians and its 90% interval.

    Why: one round's median of ~N gaps moves by +-30% with the VM, so a median of the
    rounds' ratios says little; pooling uses every gap. The interval resamples whole
    rounds (gaps of one round share that round's machine state), seeded, so it is the
    same for the same figures.
    """
    import random

    def ratio(chosen: list[dict[str, list[float]]]) -> float:
        ours = [g for r in chosen for g in r["insgd_study_launch"]]
        bare = [g for r in chosen for g in r["bare_tuner"]]
        return statistics.median(ours) / statistics.median(bare)

    pick = random.Random(0)
    spread = sorted(ratio(pick.choices(gaps, k=len(gaps))) for _ in range(resamples))
    return {
        **{f"{name}_s": statistics.median(g for r in gaps for g in r[name]) for name in LOOPS},
        "ratio": ratio(gaps),
        "ratio_ci90": [spread[int(0.05 * resamples)], spread[int(0.95 * resamples) - 1]],
    }


def _configs(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: t["params"][k] for k in CONFIG_KEYS} for t in trials]


def ratios(row: dict[str, Any]) -> dict[str, float]:
    ours, bare, floor = (row[name] for name in LOOPS)
    total, steady = "total_overhead_per_trial_s", "steady_overhead_per_trial_s"
    return {
        "total_overhead_ratio": ours[total] / bare[total],
        "steady_overhead_ratio": ours[steady] / bare[steady],
        "total_overhead_ratio_vs_optuna_rdb": ours[total] / floor[total],
        "steady_overhead_ratio_vs_optuna_rdb": ours[steady] / floor[steady],
    }


def start_quiet_ray() -> Any:
    """One local Ray for every loop, without Tune's new console output, its automatic
    logger callbacks or the token warning; returns the `ray` module."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    return ray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.rounds < 1:
        print("study_overhead: --trials must be >= 2 and --rounds >= 1", file=sys.stderr)
        return 2

    start_quiet_ray()
    # Every loop starts warm: the libraries they use (Tune, the trainer, Optuna and
    # SQLAlchemy) are imported and one throwaway Tuner has run before anything is timed,
    # so whichever loop comes first is not charged for one-off imports the others reuse.
    import optuna  # noqa: F401
    import ray.tune  # noqa: F401
    import sqlalchemy  # noqa: F401

    import trainers.train  # noqa: F401

    rounds = []
    try:
        with tempfile.TemporaryDirectory(prefix="insgd-overhead-") as tmp:
            workdir = Path(tmp)
            url = f"sqlite:///{workdir / 'studies.db'}"
            warm_up(workdir)
            configs = None
            gaps = []
            for index in range(args.rounds):
                row, round_gaps, configs = run_round(workdir, url, index, args, configs)
                gaps.append(round_gaps)
                rounds.append({**row, **ratios(row)})
                if not args.json:
                    print(f"round {index + 1}/{args.rounds}: " + _ratio_line(rounds[-1]))
    finally:
        ray.shutdown()
    result: dict[str, Any] = {
        name: {k: statistics.median(r[name][k] for r in rounds) for k in rounds[0][name]}
        for name in LOOPS
    }
    for key in ratios(rounds[0]):
        result[key] = statistics.median(r[key] for r in rounds)
    result.update(steady_pooled=pooled_steady(gaps), rounds=rounds, cpus=os.cpu_count())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.trials} trials of digits + mlp, {args.epochs} epoch(s), one at a time, "
        f"{os.cpu_count()} CPUs; medians of {args.rounds} round(s)"
    )
    print(f"{'':24}{'wall s':>8}{'work s':>8}{'overhead/trial s':>18}{'steady/trial s':>16}")
    labels = ("insgd-study launch", "bare Tuner", "Tuner + OptunaSearch")
    for label, name in zip(labels, LOOPS, strict=True):
        row = result[name]
        print(
            f"{label:24}{row['wall_s']:8.1f}{row['work_s']:8.1f}"
            f"{row['total_overhead_per_trial_s']:18.3f}"
            f"{row['steady_overhead_per_trial_s']:16.3f}"
        )
    print("median " + _ratio_line(result))
    pooled = result["steady_pooled"]
    low, high = pooled["ratio_ci90"]
    print(
        f"steady, all rounds' gaps pooled: ours {pooled['insgd_study_launch_s'] * 1e3:.1f} ms, "
        f"bare {pooled['bare_tuner_s'] * 1e3:.1f} ms, ratio {pooled['ratio']:.2f}x "
        f"(90% interval over rounds {low:.2f}-{high:.2f}x)"
    )
    return 0


def _ratio_line(row: dict[str, Any]) -> str:
    return (
        f"ratio ours / bare: total {row['total_overhead_ratio']:.2f}x, "
        f"steady {row['steady_overhead_ratio']:.2f}x; ours / Tuner + OptunaSearch on RDB: "
        f"total {row['total_overhead_ratio_vs_optuna_rdb']:.2f}x, "
        f"steady {row['steady_overhead_ratio_vs_optuna_rdb']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
