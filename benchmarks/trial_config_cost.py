"""What a trial's Tune config costs the driver's event loop: a complete TrainConfig in it
(the study before `study.run.trial_config`) against the trial's own values only (now).

Ray Tune handles each trial's config on its event loop, between one trial and the next:
`SearchGenerator.create_trial_if_possible` deep-copies it, formats every entry into the
trial's name and builds the `Trial`; every result carries it and is flattened (once when
Tune processes the result, once more when the trial stops). Around that the study did its
own work per trial: the searcher built the `TrainConfig` dict (now the worker and the
recorder merge the templates back, `TrialTemplates.options`).

This times exactly those calls, Tune's own functions on both config shapes, in one
process, alternating the two shapes `--rounds` times, and reports the medians per trial
and their difference. No Ray cluster is started.

Usage: python benchmarks/trial_config_cost.py [--trials 300] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _trainable(config: dict[str, Any]) -> None:  # pragma: no cover - never run
    pass


def _generator(suggest: Callable[[int], dict[str, Any]], storage: str) -> Any:
    """Tune's SearchGenerator over a searcher whose i-th config is `suggest(i)`."""
    from ray import tune
    from ray.tune.experiment import Experiment
    from ray.tune.search import Searcher, SearchGenerator

    class CountingSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="val_accuracy", mode="max")
            self.index = 0

        def suggest(self, trial_id: str) -> dict[str, Any]:
            self.index += 1
            return suggest(self.index - 1)

    generator = SearchGenerator(CountingSearcher())
    experiment = Experiment(
        "cost",
        tune.with_resources(_trainable, {"cpu": 1}),
        storage_path=storage,
        num_samples=10**9,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        max_failures=3,
    )
    generator.add_configurations(experiment)
    return generator


def _result(config: dict[str, Any]) -> dict[str, Any]:
    """A study trial's one-epoch result as Tune holds it (the trainable's report, Tune's
    own entries and the trial's config)."""
    metrics = {
        "epoch": 1,
        "train_loss": 0.5,
        "train_accuracy": 0.8,
        "val_loss": 0.6,
        "val_accuracy": 0.79,
        "lr": 0.1,
        "epoch_seconds": 0.013,
        "images_per_second": 1.2e5,
        "diverged": False,
        "node_id": "a" * 56,
        "hostname": "vm",
        "device_name": "cpu (AMD EPYC)",
        "resumed_from_epoch": 0,
    }
    tune_keys = {
        "timestamp": 1,
        "checkpoint_dir_name": None,
        "done": True,
        "training_iteration": 1,
        "trial_id": "abc12_00001",
        "date": "2026-11-25_13-00-00",
        "time_this_iter_s": 0.02,
        "time_total_s": 0.02,
        "pid": 1234,
        "hostname": "vm",
        "node_ip": "10.0.0.1",
        "time_since_restore": 0.02,
        "iterations_since_restore": 1,
        "experiment_tag": "1_x",
    }
    return {**metrics, **tune_keys, "config": config}


def measure(trials: int, shape: str, storage: str) -> float:
    """Seconds per trial of the driver's config handling for one shape ("full"/"own")."""
    from ray._private.dict import flatten_dict

    from study.config import StudyConfig
    from study.run.trial_config import TrialTemplates

    study = StudyConfig()
    templates = TrialTemplates.for_study(study)
    points = [("sgd", 0.05, None), ("insgd-l1", 0.2, 0.01), ("insgd-l2", 1.0, 0.003)]
    own = [
        {
            "trial_number": i,
            "variant": variant,
            "lr": lr,
            "eps": eps,
            "seed": 0,
            "optuna_trial": i,
        }
        for i, (variant, lr, eps) in enumerate(points)
    ]

    def suggest(index: int) -> dict[str, Any]:
        config = own[index % len(own)]
        if shape == "own":
            return config
        # before: the searcher built the complete TrainConfig dict into the config
        variant, lr, eps = config["variant"], config["lr"], config["eps"]
        return {**config, "train": study.train_config(variant, lr, eps, 0).to_dict()}

    generator = _generator(suggest, storage)  # set-up, not a trial's cost
    started = time.perf_counter()
    for _ in range(trials):
        trial = generator.create_trial_if_possible(generator._experiment.spec)
        # what the recorder stores (and the worker trains)
        stored = trial.config.get("train") or templates.options(trial.config)
        assert stored["lr"] == trial.config["lr"]
        result = _result(trial.config)
        flatten_dict(result)  # Tune processing the result
        flatten_dict(result)  # and again when the trial stops
    return (time.perf_counter() - started) / trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.rounds < 1:
        print("trial_config_cost: --trials and --rounds must be >= 1", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"full": [], "own": []}
    with tempfile.TemporaryDirectory(prefix="insgd-config-cost-") as storage:
        measure(50, "full", storage)  # warm: imports, Tune's registry
        measure(50, "own", storage)
        for index in range(args.rounds):
            for shape in ("full", "own") if index % 2 == 0 else ("own", "full"):
                times[shape].append(measure(args.trials, shape, storage))
    full, own = statistics.median(times["full"]), statistics.median(times["own"])
    figures = {"full_ms": full * 1e3, "own_ms": own * 1e3, "saved_ms": (full - own) * 1e3}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"per trial, medians of {args.rounds} rounds of {args.trials} trials:")
    print(f"  complete TrainConfig in the Tune config: {figures['full_ms']:.3f} ms")
    print(f"  the trial's own values + templates:      {figures['own_ms']:.3f} ms")
    print(f"  saved: {figures['saved_ms']:.3f} ms per trial ({full / own:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
