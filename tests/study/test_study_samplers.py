"""A seeded sampler on a resumed study continues where the study stopped: it never
replays the configurations of the launches before (`study.search.samplers`).

Each launch is what `study.run.runner._fit` builds on the study's database (the
driver's Optuna storage, the sampler made from the study's trial count, the searcher),
run without Ray: a second launch continues the first and must not sample any of its
configurations again, which a fresh sampler with the same seed would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
import study_helpers as helpers

from study.config import merge
from study.run.runner import make_plan, optuna_rdb_storage
from study.search.optuna_storage import DriverStorage
from study.search.samplers import make_sampler, optuna_trial_count
from study.search.searcher import METRIC, SeededSearch, StudyOptunaSearch
from study.search.space import Point, define_space, grid_points
from study.writes import InlineWrites

REPO = Path(__file__).resolve().parents[2]


def _launch(url: str, config, first_number: int, budget: int, *, continued=True) -> list[Point]:
    """One launch's searcher on the study in `url`; returns the configurations it ran."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = DriverStorage(optuna_rdb_storage(url))
    asked = optuna_trial_count(storage, config.name) if continued else 0
    inner = StudyOptunaSearch(
        define_space(config),
        metric=METRIC,
        mode="max",
        sampler=make_sampler(config, asked=asked),
        study_name=config.name,
        storage=storage,
    )
    search = SeededSearch(
        inner,
        config,
        fixed=[],
        sample=True,
        budget=budget,
        first_number=first_number,
        writes=InlineWrites(),
        ask_ahead=config.sampler != "tpe",
    )
    points = []
    for i in range(budget):
        trial = search.suggest(f"t{first_number + i}")
        assert isinstance(trial, dict), trial
        points.append(Point(trial["variant"], trial["lr"], trial["eps"]))
        result = {METRIC: 0.1 + trial["lr"] / 20, "epoch": 1, "diverged": False}
        search.on_trial_complete(f"t{first_number + i}", result)
    storage._backend.engine.dispose()
    return points


def _repeats(first: list[Point], second: list[Point]) -> list[Point]:
    return [p for p in second if any(p.same_as(q) for q in first)]


@pytest.mark.parametrize("sampler", ["random", "tpe", "qmc"])
def test_a_resumed_seeded_search_never_replays_a_configuration(tmp_path, sampler):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    flags = {"name": "rp", "sampler": sampler, "sampler_seed": 7, "epochs": 1}
    before, after = 4, 4  # TPE: within its 10 random start-up trials
    first = _launch(url, merge(flags={**flags, "trials": before}).config, 0, before)
    second = _launch(url, merge(flags={**flags, "trials": before + after}).config, before, after)
    assert len({(p.variant, p.lr, p.eps) for p in first + second}) == before + after
    assert not _repeats(first, second)
    # nor the draws of the parameters QMC's Sobol sequence leaves to random (variant, eps)
    assert [(p.variant, p.eps) for p in second] != [(p.variant, p.eps) for p in first]
    # the study stays reproducible: the same two launches again sample the same points
    again = f"sqlite:///{tmp_path / 'again.db'}"
    assert _launch(again, merge(flags={**flags, "trials": before}).config, 0, before) == first
    second_again = _launch(
        again, merge(flags={**flags, "trials": before + after}).config, before, after
    )
    assert second_again == second


def test_without_continuing_a_seeded_random_search_would_replay_itself(tmp_path):
    """What the test above guards against (the sampler made as for a new study)."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    flags = {"name": "rp", "sampler": "random", "sampler_seed": 7, "epochs": 1}
    first = _launch(url, merge(flags={**flags, "trials": 4}).config, 0, 4)
    second = _launch(url, merge(flags={**flags, "trials": 8}).config, 4, 4, continued=False)
    assert second == first


def test_a_new_study_samples_as_the_seed_always_did():
    config = merge(flags={"trials": 4, "sampler": "random", "sampler_seed": 7}).config
    ours = make_sampler(config, asked=0)
    plain = optuna.samplers.RandomSampler(seed=7)
    assert ours._rng.rng.random() == plain._rng.rng.random()


def test_a_resumed_grid_runs_only_the_points_it_has_not_run():
    config = merge(flags={"norms": ("none", "l2"), "lr_points": 3, "epochs": 1}).config
    points = grid_points(config)
    done = [_Row(n, "COMPLETE", p) for n, p in enumerate(points[:3])]
    failed = [_Row(3, "FAIL", points[3])]  # a failed point runs again: nothing else does
    plan = make_plan(config, done + failed, {})
    planned = [g.point for g in plan.groups]
    assert planned == points[3:]
    assert plan.first_number == 4 and plan.budget == len(points) - 3


class _Row:
    """A results row as `make_plan` reads it."""

    def __init__(self, number: int, state: str, point: Point) -> None:
        self.trial_number = number
        self.state = state
        self.variant = point.variant
        self.norm = {"sgd": "none"}.get(point.variant, point.variant.removeprefix("insgd-"))
        self.lr = point.lr
        self.eps = point.eps
        self.seed = 0
        self.diverged = False
        self.final_val_accuracy = 0.5
        self.epochs_completed = 1


@pytest.mark.slow
def test_resume_of_a_seeded_random_study_samples_new_configurations(tmp_path):
    """`launch --trials 4 --sampler random --sampler-seed 7`, then `--resume --trials 8`:
    eight distinct configurations (they used to repeat the first four)."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = helpers.launch_command(url, "rp", tmp_path / "ray")
    first = base + "--epochs 2 --trials 4 --sampler random --sampler-seed 7".split()
    for argv in (first, base + ["--resume", "--trials", "8"]):
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = helpers.trials(url, "rp")
    assert len(rows) == 8 and all(r.state == "COMPLETE" for r in rows)
    configs = {
        (r.variant, round(r.lr, 12), None if r.eps is None else round(r.eps, 12)) for r in rows
    }
    assert len(configs) == 8
    states = [t.state for t in helpers.optuna_trials(url, "rp")]
    assert states == [optuna.trial.TrialState.COMPLETE] * 8
