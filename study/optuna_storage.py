"""Optuna's RDB storage for the driver, serving the trials it runs from memory.

Optuna's `_CachedStorage` (what an `RDBStorage` is wrapped in) caches only *finished*
trials: any other process might change an unfinished one, so every `get_trial` of a
RUNNING trial reloads it from the database, one query for the trial and one per
attribute table. Optuna reads a trial that way when `ask` creates its `Trial` and when
`tell` checks it (and once more after the tell, for the finished trial it returns):
twelve of the 48 statements a trial costs in Optuna (ask, report, attributes, tell), in
a study of short trials where the driver's CPU per trial is what a trial costs on top of
bare Ray Tune.

In a study the driver is the only writer of its RUNNING Optuna trials (workers never
touch Optuna; `study.runner` lets one launch run a study at a time), so
`DriverStorage` keeps a copy of each trial it created or started, kept in step by its
own writes, which still go to the database first (write-through: the dashboard and any
reader see exactly what they did before). When the trial finishes, the copy is dropped
and Optuna's own cache takes over. Every write that fails drops the copy too, so the
next read goes to the database.

One behaviour differs, by design: a change made to a RUNNING trial by another process
(e.g. failing it by hand from optuna-dashboard) is not seen by the driver's reads; the
driver's next write of that trial's state is then refused by the database, as it would
be by Optuna's own check, and the study reports that error.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState


class DriverStorage(_CachedStorage):
    """`_CachedStorage` over `backend` that also serves its own RUNNING trials from memory."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._running: dict[int, FrozenTrial] = {}

    # -- reads ---------------------------------------------------------------------------
    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            mine = self._running.get(trial_id)
            if mine is not None:
                return _copy(mine)
        return super().get_trial(trial_id)

    # -- writes: to the database first, then the copy ------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        with self._lock:
            _, number = self._trial_id_to_study_id_and_number[trial_id]
            created = self._studies[study_id].trials[number]
            if created.state == TrialState.RUNNING:
                self._running[trial_id] = _copy(created)
        return trial_id

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._lock:
            self._running.pop(trial_id, None)
        updated = super().set_trial_state_values(trial_id, state, values)
        if updated and state == TrialState.RUNNING:
            # a WAITING (enqueued) trial this driver just started: read it once
            started = self._backend.get_trial(trial_id)
            with self._lock:
                self._running[trial_id] = started
        return updated

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        with self._keeping(trial_id) as mine:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            if mine is not None:
                mine.params[param_name] = distribution.to_external_repr(param_value_internal)
                mine.distributions[param_name] = distribution

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        with self._keeping(trial_id) as mine:
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            if mine is not None:
                mine.intermediate_values[step] = float(intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._keeping(trial_id) as mine:
            super().set_trial_user_attr(trial_id, key, value)
            if mine is not None:
                mine.user_attrs[key] = _as_stored(value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._keeping(trial_id) as mine:
            super().set_trial_system_attr(trial_id, key, value)
            if mine is not None:
                mine.system_attrs[key] = _as_stored(value)

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """All of `attrs` as the trial's user attributes in ONE transaction.

        Optuna commits each `set_user_attr` on its own (a SELECT, an upsert and a commit
        each); this writes exactly the same rows through the RDB storage's per-attribute
        helper inside a single session.
        """
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        backend = self._backend
        with self._keeping(trial_id) as mine:
            with _create_scoped_session(backend.scoped_session, True) as session:
                for name, value in attrs.items():
                    backend._set_trial_attr_without_commit(
                        session, models.TrialUserAttributeModel, trial_id, name, value
                    )
            if mine is not None:
                mine.user_attrs.update({k: _as_stored(v) for k, v in attrs.items()})

    def running_trial_ids(self) -> list[int]:
        """The trials served from memory now (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._running)

    @contextmanager
    def _keeping(self, trial_id: int) -> Iterator[FrozenTrial | None]:
        """One write: yields the trial's copy (None if not kept); a failed write drops it."""
        with self._lock:
            mine = self._running.get(trial_id)
        try:
            yield mine
        except BaseException:
            with self._lock:
                self._running.pop(trial_id, None)
            raise


def _as_stored(value: Any) -> Any:
    """The value as the database gives it back (JSON: tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy callers may change without changing the kept one."""
    return copy.deepcopy(trial)
