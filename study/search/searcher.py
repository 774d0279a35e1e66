"""How trials are chosen: one Optuna trial per configuration, one Tune trial per seed.

A study repeats every configuration (variant, lr, eps) with seeds 0..N-1. Asking Optuna once
per *seed* would let TPE treat seed noise as signal and would sample N unrelated points;
making the seed a search parameter would let it "optimise" the seed. So `SeededSearch`
wraps `OptunaSearch`:

- it asks Optuna once per configuration (a *group*) and emits N Tune trials, one per seed,
  each carrying its seed and a study-wide trial number that the database uses;
- per epoch it reports to Optuna the mean validation accuracy over the group's seeds, once
  every seed still running has reached that epoch (with one seed: live, every epoch; an
  epoch that is a seed's last is reported when that seed ends, milliseconds later,
  together with the group's tell if it was the last seed);
- when the group's last seed ends it tells Optuna the mean final accuracy (COMPLETE; a
  diverged seed counts as 0), PRUNED if a scheduler stopped any seed early, FAIL if any
  seed failed, and stores the variant, whether any seed diverged and the group's trial
  numbers as Optuna user attributes.

Fixed points (every grid point, and on ``--resume`` the configurations whose seeds are
missing) are enqueued in Optuna right before they are asked for, so Optuna's history holds
them like sampled ones. Which trials exist is decided from the results database, not from
Tune's experiment state, which is why `save`/`restore` keep nothing (see `study.run.runner`).

Every Optuna call goes through `writes` (`study.writes`): in a launch, one background
thread in submission order, so reports and tells leave the driver's event loop while asks
still see every earlier tell. The bookkeeping above stays in the driver's thread. On the
driver's storage an ask (the trial, then its parameters), a report of several epochs and
a tell (the last reports, the attributes, the outcome) each write in one transaction
(`DriverStorage.one_transaction`): for a one-epoch trial three instead of six or seven.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from storage.errors import DatabaseUnavailable
from study.config import StudyConfig
from study.search.objective import METRIC, MODE, is_final_result, objective, stopped_early
from study.search.optuna_private import _tell_with_warning
from study.search.space import Point
from study.writes import InlineWrites, Writes

#: How often (seconds) `SeededSearch.suggest`, waiting for Optuna's answer to an ask,
#: checks whether the writes thread is stalled on the database (then Tune's loop goes on).
ASK_PATIENCE = 0.25

#: Ray's OptunaSearch's own logger: what `StudyOptunaSearch.on_trial_complete` logs in its
#: place is shown or hidden as Ray's was (a launch keeps Ray quiet unless --verbose)
_logger = logging.getLogger(OptunaSearch.__module__)


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
    optuna_number: int | None = None

    @property
    def done(self) -> bool:
        return len(self.outcomes) >= self.seeds


#: `SeededSearch._group_with_work`: the next group's ask has not come back yet.
_NOT_YET: Any = object()


class StudyOptunaSearch(OptunaSearch):
    """OptunaSearch plus what a study needs: enqueued fixed points and user attributes."""

    def _suggest_from_define_by_run_func(
        self, func: Callable[[Any], dict[str, Any] | None], ot_trial: Any
    ) -> dict[str, Any]:
        """The space's values, as Ray's own method gives them, without Ray's captor.

        Ray wraps the Optuna trial in a captor that, at every `suggest_*` call, builds
        the method's signature (`inspect.signature`) to learn the parameter's name, on
        the writes thread before every trial. The study's space
        (`study.search.space.define_space`) returns what it suggested, which is all Ray's
        method returns here (its captured values, updated with the space's own).
        """
        values = func(ot_trial)
        if not isinstance(values, dict):
            raise TypeError("the study's space must return the values it suggested")
        return values

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Ray's own tell, without the deep copy of the finished trial that `Study.tell`
        makes to return it and Ray drops (~0.08 ms of the writes thread's CPU a trial,
        ~12% of a tell). As Ray's: a second completion is logged and ignored; the value
        is the result's metric, without one the trial is PRUNED (FAIL on an error); a
        refused tell is logged (the storage's own errors reach the study through
        `DriverStorage.one_transaction`); a database that stayed unavailable past the
        launch's bound (`DatabaseUnavailable`) ends the study. A study has one
        objective, so Ray's lists of metrics have no counterpart here."""
        if trial_id in self._completed_trials:
            _logger.warning("trial %s completed twice; the second is ignored", trial_id)
            return
        value = result.get(self.metric) if result else None
        if value is not None:
            state = TrialState.COMPLETE
        else:
            state = TrialState.FAIL if error else TrialState.PRUNED
        try:
            _tell_with_warning(self._ot_study, self._ot_trials[trial_id], value, state=state)
        except DatabaseUnavailable:
            raise  # not a refused tell: the study stops (study.run.runner)
        except Exception as exc:  # noqa: BLE001 - logged and the study goes on, as Ray does
            _logger.warning(exc)
        self._completed_trials.add(trial_id)

    def ask_fixed(self, key: str, point: Point) -> dict[str, Any]:
        """Ask for a trial whose parameters are `point` (enqueued, then popped at once)."""
        self._ot_study.enqueue_trial(point.params, skip_if_exists=False)
        return self.suggest(key)

    def set_user_attrs(self, key: str, attrs: dict[str, Any]) -> None:
        """All of a trial's user attributes in one transaction where the storage allows it.

        Optuna commits each `set_user_attr` on its own; a `DriverStorage`
        (`study.search.optuna_storage`) writes the same rows in one transaction. Any other
        storage gets one call per attribute.
        """
        trial = self._ot_trials.get(key)
        if trial is None:
            return
        write_all = getattr(trial.storage, "set_trial_user_attrs", None)
        if write_all is None:
            for name, value in attrs.items():
                trial.set_user_attr(name, value)
            return
        write_all(trial._trial_id, attrs)
        cached = getattr(trial, "_cached_frozen_trial", None)  # as set_user_attr keeps it
        if cached is not None:
            cached.user_attrs.update(attrs)

    def one_transaction(self) -> contextlib.AbstractContextManager[None]:
        """The Optuna writes of a block in one transaction where the storage allows it
        (`DriverStorage.one_transaction`); one per write on any other storage."""
        batch = getattr(self._ot_study._storage, "one_transaction", None)
        return batch() if batch is not None else contextlib.nullcontext()

    def ask_group(self, key: str, point: Point | None) -> tuple[dict[str, Any], int]:
        """Ask for a configuration (`point`'s, if fixed); returns its params and number.
        The trial is created at once, its parameters written together after the ask."""
        with self.one_transaction():
            params = self.suggest(key) if point is None else self.ask_fixed(key, point)
        return params, int(self._ot_trials[key].number)

    def report_steps(self, key: str, reports: Sequence[dict[str, Any]]) -> None:
        """Report the group's mean accuracy of one or more epochs (Optuna's intermediate
        values), in one transaction where the storage allows it."""
        with self.one_transaction():
            for report in reports:
                self.on_trial_result(key, report)

    def fail_unused(self, key: str) -> None:
        """Fail the trial asked for `key`, which will not finish (if the ask got that far)."""
        if key in self._ot_trials:
            self.on_trial_complete(key, error=True)

    def tell_group(
        self,
        key: str,
        attrs: dict[str, Any],
        *,
        failed: bool,
        value: float | None,
        reports: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Report the group's last epochs, store its user attributes, then tell its
        outcome (value None: PRUNED): one transaction where the storage allows it."""
        with self.one_transaction():
            self.report_steps(key, reports)  # its own block joins this one
            self.set_user_attrs(key, attrs)
            if failed:
                self.on_trial_complete(key, error=True)
            elif value is None:
                self.on_trial_complete(key, result=None)
            else:
                self.on_trial_complete(key, result={METRIC: value})


class SeededSearch(Searcher):
    """The Tune searcher of a study: see the module docstring.

    `fixed` are groups to run first (resumed partial configurations, then grid points);
    when they are used up and `sample` is true, new configurations come from Optuna.
    `budget` is how many Tune trials this launch creates; `first_number` the first study
    trial number it hands out (numbers are never reused, across launches too). `writes`
    runs the Optuna calls (at once, in this thread, when not given).

    `ask_ahead` (for samplers whose next point does not depend on results: random, qmc,
    and fixed points) asks Optuna for the next configuration as soon as the current one
    starts, so the ask runs on the writes thread while the trial trains instead of
    between two trials. Optuna then shows that configuration RUNNING from its ask on.
    TPE asks only when a configuration is needed, after every earlier tell; under
    ``--fuse K`` (`study.run.bundle`) a bundle's configurations are needed, and asked,
    back to back before any of them is told, which TPE's constant liar keeps apart. After
    Tune stops, `fail_unfinished` fails what was asked and will not finish.
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
        writes: Writes | None = None,
        ask_ahead: bool = False,
    ) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._optuna = optuna_search
        self._writes: Writes = writes if writes is not None else InlineWrites()
        self._ask_ahead = ask_ahead
        self._ahead: tuple[Group, Future[tuple[dict[str, Any], int]]] | None = None
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
        if group is _NOT_YET:
            return None  # the ask waits on the database: Tune asks again at a later step
        seed = group.todo.popleft()
        number = self._next_number
        self._next_number += 1
        self._emitted += 1
        self._by_trial[trial_id] = (group, seed, number)
        assert group.point is not None
        point = group.point
        # the trial's own values only: the rest of what it trains is the study's
        # `TrialTemplates`, which the trainable and the recorder merge back
        return {
            "trial_number": number,
            "variant": point.variant,
            "lr": point.lr,
            "eps": point.eps,
            "seed": seed,
            "optuna_trial": group.optuna_number,
        }

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        entry = self._by_trial.get(trial_id)
        if entry is None:
            return
        group, seed, _ = entry
        self._record_epoch(group, seed, result)
        if not is_final_result(result, self._config.epochs):
            self._submit_reports(group, self._ready_reports(group))
        # a seed's last epoch is reported when it ends, with the group's tell if it is
        # the last seed: one transaction instead of two (`on_trial_complete`)

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
        reports = self._ready_reports(group)
        if group.done:
            self._tell(group, reports)
        else:
            self._submit_reports(group, reports)

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
        """The group the next trial belongs to; None when there is none; `_NOT_YET`
        when its ask has not come back and the writes thread is stalled, waiting for the
        database (`study.writes`): Tune's loop then goes on, running trials keep training
        and reporting, and the next `suggest` waits for the same ask again."""
        if self._current is not None and self._current.todo:
            return self._current
        if self._ahead is None:
            upcoming = self._next_group()
            if upcoming is None:
                return None
            asked = self._writes.submit(self._optuna.ask_group, upcoming.key, upcoming.point)
            self._ahead = (upcoming, asked)
        group, asked = self._ahead
        while True:
            try:
                answer = self._writes.wait(asked, timeout=ASK_PATIENCE)
                break
            except FutureTimeout:
                if self._writes.stalled():
                    return _NOT_YET
        self._ahead = None
        self._start_group(group, answer)
        if self._ask_ahead and self._budget - self._emitted - len(group.todo) > 0:
            upcoming = self._next_group()
            if upcoming is not None:
                asked = self._writes.submit(self._optuna.ask_group, upcoming.key, upcoming.point)
                self._ahead = (upcoming, asked)
        return group

    def _next_group(self) -> Group | None:
        """The next group to run (not asked yet): a queued fixed one, else a new sample."""
        while self._queue:
            group = self._queue.popleft()
            if group.todo:
                return group
        if not self._sample:
            return None
        self._group_counter += 1
        return Group(
            key=f"new-{self._group_counter}",
            point=None,
            todo=deque(range(self._config.seeds)),
            seeds=self._config.seeds,
        )

    def _start_group(self, group: Group, answer: tuple[dict[str, Any], int]) -> None:
        params, group.optuna_number = answer
        group.point = Point.from_params(params)
        self._groups[group.key] = group
        self._current = group

    def fail_unfinished(self) -> None:
        """After Tune stopped (an interrupted launch): every Optuna trial this launch asked
        for that will not finish becomes FAIL, as `ResultWriter.fail_running_trials` does
        for the results: the configuration asked ahead, and groups with seeds cut off."""
        groups = list(self._groups.values())
        if self._ahead is not None:
            groups.append(self._ahead[0])
            self._ahead = None
        for group in groups:
            if not group.told:
                group.told = True
                self._writes.submit(self._optuna.fail_unused, group.key)

    def _record_epoch(self, group: Group, seed: int, result: dict[str, Any]) -> None:
        epoch = result.get("epoch")
        if epoch is None:
            return
        group.curves.setdefault(seed, {})[int(epoch)] = objective(result.get(METRIC))

    def _submit_reports(self, group: Group, reports: list[dict[str, Any]]) -> None:
        if reports:
            self._writes.submit(self._optuna.report_steps, group.key, reports)

    def _ready_reports(self, group: Group) -> list[dict[str, Any]]:
        """The epochs whose mean is now due: every seed has reported it or has ended
        before it. Each is taken once (`reported_step`)."""
        reports: list[dict[str, Any]] = []
        if group.told:
            return reports
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
                return reports
            reports.append({METRIC: sum(values) / len(values), "training_iteration": step})
            group.reported_step = step

    def _tell(self, group: Group, reports: list[dict[str, Any]]) -> None:
        if group.told:
            return
        outcomes = [group.outcomes[s] for s in sorted(group.outcomes)]
        assert group.point is not None
        # each attribute is a write to the database: three, set once, at the end
        attrs = {
            "variant": group.point.variant,
            "diverged": any(o.diverged for o in outcomes),
            "trial_numbers": [o.trial_number for o in outcomes],
        }
        failed = any(o.failed for o in outcomes)
        value = None
        if not failed and not any(o.pruned for o in outcomes):
            value = sum(objective(o.accuracy) for o in outcomes) / len(outcomes)
        self._writes.submit(
            self._optuna.tell_group, group.key, attrs, failed=failed, value=value, reports=reports
        )
        group.told = True
