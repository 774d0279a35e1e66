"""How trials are chosen: one Optuna trial per configuration, one Tune trial per seed.

A study repeats every configuration (norm, lr, eps) with seeds 0..N-1. Asking Optuna once
per *seed* would let TPE treat seed noise as signal and would sample N unrelated points;
making the seed a search parameter would let it "optimise" the seed. So `SeededSearch`
wraps `OptunaSearch`:

- it asks Optuna once per configuration (a *group*) and emits N Tune trials, one per seed,
  each carrying its seed and a study-wide trial number that the database uses;
- per epoch it reports to Optuna the mean validation accuracy over the group's seeds, once
  every seed still running has reached that epoch (with one seed: live, every epoch);
- when the group's last seed ends it tells Optuna the mean final accuracy (COMPLETE; a
  diverged seed counts as 0), PRUNED if a scheduler stopped any seed early, FAIL if any
  seed failed, and stores the variant, whether any seed diverged and the group's trial
  numbers as Optuna user attributes.

Fixed points (every grid point, and on ``--resume`` the configurations whose seeds are
missing) are enqueued in Optuna right before they are asked for, so Optuna's history holds
them like sampled ones. Which trials exist is decided from the results database, not from
Tune's experiment state, which is why `save`/`restore` keep nothing (see `study.runner`).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.config import StudyConfig
from study.space import Point, variant_of

METRIC = "val_accuracy"
MODE = "max"


@dataclass
class SeedOutcome:
    """How one seed of a group ended."""

    accuracy: float | None
    epochs: int
    diverged: bool = False
    pruned: bool = False
    failed: bool = False
    trial_number: int | None = None


@dataclass
class Group:
    """One configuration and the seeds it still has to run."""

    key: str
    point: Point | None
    todo: deque[int]
    seeds: int
    outcomes: dict[int, SeedOutcome] = field(default_factory=dict)
    curves: dict[int, dict[int, float]] = field(default_factory=dict)
    reported_step: int = 0
    told: bool = False

    @property
    def done(self) -> bool:
        return len(self.outcomes) >= self.seeds


def stopped_early(result: dict[str, Any] | None, epochs_planned: int) -> bool:
    """A trial a scheduler stopped: fewer epochs than planned and not because it diverged."""
    if not result:
        return False
    epoch = int(result.get("epoch") or 0)
    return epoch < epochs_planned and not bool(result.get("diverged"))


def objective(value: Any) -> float:
    """The number Optuna records: accuracy, 0 where it is missing or not finite (diverged)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


class StudyOptunaSearch(OptunaSearch):
    """OptunaSearch plus what a study needs: enqueued fixed points and user attributes."""

    def ask_fixed(self, key: str, point: Point) -> dict[str, Any]:
        """Ask for a trial whose parameters are `point` (enqueued, then popped at once)."""
        self._ot_study.enqueue_trial(point.params, skip_if_exists=False)
        return self.suggest(key)

    def set_user_attrs(self, key: str, attrs: dict[str, Any]) -> None:
        """All of a trial's user attributes in one transaction where the storage allows it.

        Optuna commits each `set_user_attr` on its own (a SELECT, an upsert and a commit
        each); on an RDB storage the three attributes of a group go through its own
        per-attribute helper inside a single session instead, so the trial still gets
        exactly the rows `set_user_attr` would write. Any other storage (or an Optuna
        without those helpers) falls back to one call per attribute.
        """
        trial = self._ot_trials.get(key)
        if trial is None:
            return
        if not _set_user_attrs_in_one_session(trial, attrs):
            for name, value in attrs.items():
                trial.set_user_attr(name, value)

    def optuna_number(self, key: str) -> int | None:
        trial = self._ot_trials.get(key)
        return None if trial is None else int(trial.number)


def _set_user_attrs_in_one_session(trial: Any, attrs: dict[str, Any]) -> bool:
    """Write `attrs` as `trial`'s user attributes in one RDB transaction; False if unable."""
    backend = getattr(trial.storage, "_backend", trial.storage)  # _CachedStorage wraps it
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # pragma: no cover - an Optuna without these internals
        return False
    if not isinstance(backend, RDBStorage) or not hasattr(
        backend, "_set_trial_attr_without_commit"
    ):
        return False
    with _create_scoped_session(backend.scoped_session, True) as session:
        for name, value in attrs.items():
            backend._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial._trial_id, name, value
            )
    cached = getattr(trial, "_cached_frozen_trial", None)  # as set_user_attr keeps it
    if cached is not None:
        cached.user_attrs.update(attrs)
    return True


class SeededSearch(Searcher):
    """The Tune searcher of a study: see the module docstring.

    `fixed` are groups to run first (resumed partial configurations, then grid points);
    when they are used up and `sample` is true, new configurations come from Optuna.
    `budget` is how many Tune trials this launch creates; `first_number` the first study
    trial number it hands out (numbers are never reused, across launches too).
    """

    def __init__(
        self,
        optuna_search: StudyOptunaSearch,
        config: StudyConfig,
        *,
        fixed: Iterable[Group],
        sample: bool,
        budget: int,
        first_number: int,
    ) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._optuna = optuna_search
        self._config = config
        self._queue: deque[Group] = deque(fixed)
        self._sample = sample
        self._budget = budget
        self._next_number = first_number
        self._emitted = 0
        self._current: Group | None = None
        self._groups: dict[str, Group] = {}
        self._by_trial: dict[str, tuple[Group, int, int]] = {}
        self._group_counter = 0

    @property
    def emitted(self) -> int:
        """Trials handed to Tune so far."""
        return self._emitted

    # -- Searcher API ---------------------------------------------------------------------
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True  # the space is ours; Tune's metric/mode match METRIC/MODE

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._emitted >= self._budget:
            return Searcher.FINISHED
        group = self._group_with_work()
        if group is None:
            return Searcher.FINISHED
        seed = group.todo.popleft()
        number = self._next_number
        self._next_number += 1
        self._emitted += 1
        self._by_trial[trial_id] = (group, seed, number)
        assert group.point is not None
        point = group.point
        train = self._config.train_config(point.norm, point.lr, point.eps, seed).to_dict()
        return {
            "trial_number": number,
            "norm": point.norm,
            "lr": point.lr,
            "eps": point.eps,
            "seed": seed,
            "variant": variant_of(point.norm),
            "optuna_trial": self._optuna.optuna_number(group.key),
            "train": train,
        }

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        entry = self._by_trial.get(trial_id)
        if entry is None:
            return
        group, seed, _ = entry
        self._record_epoch(group, seed, result)
        self._report_ready_steps(group)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        entry = self._by_trial.pop(trial_id, None)
        if entry is None:
            return
        group, seed, number = entry
        if result:
            self._record_epoch(group, seed, result)
        curve = group.curves.get(seed, {})
        last = max(curve) if curve else 0
        diverged = bool(result and result.get("diverged"))
        # no result at all: removed before it ran (an interrupted launch), not a 0 accuracy
        failed = error or not result
        group.outcomes[seed] = SeedOutcome(
            accuracy=None if diverged or not curve else curve[last],  # diverged counts as 0
            epochs=last,
            diverged=diverged,
            pruned=not failed and stopped_early(result, self._config.epochs),
            failed=failed,
            trial_number=number,
        )
        self._report_ready_steps(group)
        if group.done:
            self._tell(group)

    def save(self, checkpoint_path: str) -> None:
        """Tune checkpoints searchers periodically; a study resumes from its database."""
        with open(checkpoint_path, "w", encoding="utf-8") as out:
            json.dump({"emitted": self._emitted, "next_number": self._next_number}, out)

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - never restored
        pass

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its search algorithm into tuner.pkl; nothing here is worth keeping.
        return {"_metric": self._metric, "_mode": self._mode}

    # -- internals ------------------------------------------------------------------------
    def _group_with_work(self) -> Group | None:
        if self._current is not None and self._current.todo:
            return self._current
        while self._queue:
            group = self._queue.popleft()
            if not group.todo:
                continue
            self._start_group(group)
            return group
        if not self._sample:
            return None
        self._group_counter += 1
        group = Group(
            key=f"new-{self._group_counter}",
            point=None,
            todo=deque(range(self._config.seeds)),
            seeds=self._config.seeds,
        )
        self._start_group(group)
        return group

    def _start_group(self, group: Group) -> None:
        if group.point is None:
            params = self._optuna.suggest(group.key)
            group.point = Point.from_params(params)
        else:
            params = self._optuna.ask_fixed(group.key, group.point)
            group.point = Point.from_params(params)
        self._groups[group.key] = group
        self._current = group

    def _record_epoch(self, group: Group, seed: int, result: dict[str, Any]) -> None:
        epoch = result.get("epoch")
        if epoch is None:
            return
        group.curves.setdefault(seed, {})[int(epoch)] = objective(result.get(METRIC))

    def _report_ready_steps(self, group: Group) -> None:
        """Report epoch s's mean once every seed has reported it or has ended before it."""
        if group.told:
            return
        while True:
            step = group.reported_step + 1
            values = []
            ready = True
            for seed in range(group.seeds):
                curve = group.curves.get(seed, {})
                if step in curve:
                    values.append(curve[step])
                elif seed not in group.outcomes:
                    ready = False
                    break
            if not ready or not values:
                return
            self._optuna.on_trial_result(
                group.key, {METRIC: sum(values) / len(values), "training_iteration": step}
            )
            group.reported_step = step

    def _tell(self, group: Group) -> None:
        if group.told:
            return
        outcomes = [group.outcomes[s] for s in sorted(group.outcomes)]
        assert group.point is not None
        # each attribute is a write to the database: three, set once, at the end
        self._optuna.set_user_attrs(
            group.key,
            {
                "variant": variant_of(group.point.norm),
                "diverged": any(o.diverged for o in outcomes),
                "trial_numbers": [o.trial_number for o in outcomes],
            },
        )
        if any(o.failed for o in outcomes):
            self._optuna.on_trial_complete(group.key, error=True)
        elif any(o.pruned for o in outcomes):
            self._optuna.on_trial_complete(group.key, result=None)
        else:
            mean = sum(objective(o.accuracy) for o in outcomes) / len(outcomes)
            self._optuna.on_trial_complete(group.key, result={METRIC: mean})
        group.told = True
