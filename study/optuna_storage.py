"""Optuna's RDB storage for the driver, serving the trials it runs from memory.

Optuna's `_CachedStorage` (what an `RDBStorage` is wrapped in) caches only *finished*
trials: any other process might change an unfinished one, so every `get_trial` of a
RUNNING trial reloads it from the database, one query for the trial and one per
attribute table. Optuna reads a trial that way when `ask` creates its `Trial`, when
`tell` checks it and once more after the tell, for the finished trial it returns; and
before every new trial `ask` reloads every unfinished trial of the study to look for
WAITING (enqueued) ones. In a study of short trials the driver's CPU per trial is what
a trial costs on top of bare Ray Tune, and these reads were most of Optuna's share.

In a study the driver is the only writer of its RUNNING Optuna trials (workers never
touch Optuna; `study.runner` lets one launch run a study at a time), so
`DriverStorage` keeps a copy of each trial it created or started, kept in step by its
own writes, which still go to the database first (write-through: the dashboard and any
reader see exactly what they did before). When the trial finishes, the copy, completed
with the state, values and completion time the database stored, becomes the finished
trial of Optuna's own cache (which a later reload replaces with the same row). Every
write that fails drops the copy, so the next read goes to the database. `ask`'s search
for WAITING trials first asks the database whether the study has any (one indexed
query) and does the full reload only when it has. A trial's user attributes are written
in one statement and one transaction (`set_trial_user_attrs`).

One behaviour differs, by design: a change made to a RUNNING trial by another process
(e.g. failing it by hand from optuna-dashboard) is not seen by the driver's reads; the
driver's next write of that trial's state is then refused by the database, as it would
be by Optuna's own check, and the study reports that error.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from storage.dialects import upsert_insert

#: Database URLs whose Optuna schema version this process has checked (`rdb_storage`).
_SCHEMA_CHECKED: set[str] = set()


def rdb_storage(url: str, engine_kwargs: dict[str, Any] | None = None) -> RDBStorage:
    """Optuna's `RDBStorage` on `url`, its schema-version check run once per URL and process.

    Each `RDBStorage` compares the database's Optuna schema with the installed Optuna's,
    an alembic scan of Optuna's migration scripts (~65 ms). A launch opens the same
    database three times (the driver's storage, then the end-of-study report's
    importances and its attachment to the dashboard) and nothing in between changes the
    schema: the first open checks, the others skip it. A failed check is not remembered.
    """
    checked = url in _SCHEMA_CHECKED
    storage = RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=checked)
    _SCHEMA_CHECKED.add(url)  # a set of strings: one membership test or add is atomic
    return storage


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

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if _only_waiting(states) and not self._has_waiting_trials(study_id):
            # what `ask` asks before each new trial: the answer is [] unless the
            # database holds a WAITING trial, which one light query tells
            return []
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

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
            mine = self._running.pop(trial_id, None)
        updated = super().set_trial_state_values(trial_id, state, values)
        if updated and state == TrialState.RUNNING:
            # a WAITING (enqueued) trial this driver just started: read it once
            started = self._backend.get_trial(trial_id)
            with self._lock:
                self._running[trial_id] = started
        elif updated and state.is_finished() and mine is not None:
            self._keep_finished(mine, state, values)
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
        each); this writes exactly the same rows after one SELECT (the trial must still be
        RUNNING), in one upsert statement on SQLite and PostgreSQL (the RDB storage's
        per-attribute helper elsewhere), and one commit.
        """
        backend = self._backend
        with self._keeping(trial_id) as mine:
            rows = [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()
            ]
            upsert = _user_attrs_upsert(backend.engine.name, rows) if rows else None
            with _create_scoped_session(backend.scoped_session, True) as session:
                if upsert is None:
                    for name, value in attrs.items():
                        backend._set_trial_attr_without_commit(
                            session, models.TrialUserAttributeModel, trial_id, name, value
                        )
                else:  # what that helper does per attribute, for all of them at once
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                    backend.check_trial_is_updatable(trial_id, trial.state)
                    session.execute(upsert)
            if mine is not None:
                mine.user_attrs.update({k: _as_stored(v) for k, v in attrs.items()})

    def running_trial_ids(self) -> list[int]:
        """The trials served from memory now (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._running)

    def _has_waiting_trials(self, study_id: int) -> bool:
        with _create_scoped_session(self._backend.scoped_session) as session:
            found = (
                session.query(models.TrialModel.trial_id)
                .filter(
                    models.TrialModel.study_id == study_id,
                    models.TrialModel.state == TrialState.WAITING,
                )
                .first()
            )
        return found is not None

    def _keep_finished(
        self, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """Put the driver's copy, now finished, in Optuna's cache of finished trials.

        Only the completion time is not known here (the database took its own clock): the
        trial's row is read back (one query) instead of the trial and its five attribute
        tables. If the row is gone (deleted by another process), nothing is kept and the
        next read goes to the database, which reports it.
        """
        try:
            with _create_scoped_session(self._backend.scoped_session) as session:
                # the row alone (its attribute tables load only when touched), converted
                # to local time by Optuna's own model, as a full read converts it
                row = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
                completed: datetime | None = row.datetime_complete
        except KeyError:
            return
        trial.state = state
        trial._values = None if values is None else [float(v) for v in values]
        trial.datetime_complete = completed
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial._trial_id)
            if where is not None:
                study_id, number = where
                self._studies[study_id].trials[number] = trial

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


def _only_waiting(states: Container[TrialState] | None) -> bool:
    return isinstance(states, tuple | list | set | frozenset) and set(states) == {
        TrialState.WAITING
    }


def _user_attrs_upsert(dialect: str, rows: list[dict[str, Any]]) -> Any:
    """INSERT ... ON CONFLICT (trial_id, key) DO UPDATE of these user-attribute rows, as
    Optuna writes one on SQLite and PostgreSQL; None for other databases (one helper call
    per attribute there)."""
    insert = upsert_insert(dialect)
    if insert is None:
        return None
    model = models.TrialUserAttributeModel
    stmt = insert(model).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=[model.trial_id, model.key],
        set_={"value_json": stmt.excluded.value_json},
    )


def _as_stored(value: Any) -> Any:
    """The value as the database gives it back (JSON: tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy callers may change without changing the kept one."""
    return copy.deepcopy(trial)
