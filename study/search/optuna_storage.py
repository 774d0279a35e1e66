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
touch Optuna; `study.run.runner` lets one launch run a study at a time), so
`DriverStorage` keeps a copy of each trial it created or started, kept in step by its
own writes, which still go to the database first (write-through: the dashboard and any
reader see exactly what they did before). When the trial finishes, the copy, completed
with the state, values and completion time the database stored, becomes the finished
trial of Optuna's own cache (which a later reload replaces with the same row). Every
write that fails drops the copy, so the next read goes to the database. `ask`'s search
for WAITING trials first asks the database whether the study has any (one indexed
query) and does the full reload only when it has.

The writes themselves cost the driver's writes thread (`study.writes`) CPU while the next
trial trains, 1.3-2.5 ms each through Optuna's ORM session (a SELECT of the trial, a
flush, a commit). On SQLite and PostgreSQL `DriverStorage` writes the same rows with
SQLAlchemy Core statements built once (`_Statements`), run as `storage.prepared.Prepared`
statements (compiled once, on the DBAPI cursor: ~40 us less CPU each than
`Connection.execute`), on a plain connection of Optuna's engine rather than an ORM
session (`_transaction`):

- a new trial (no template): under the study row's lock (SELECT ... FOR UPDATE, as
  Optuna takes it), its RUNNING row, the count of the study's trials before it, and that
  count written as its number, in one transaction;
- for a trial it holds, one transaction of the state check Optuna makes (the trial must
  not be finished) and one statement: a parameter (after its name's first use, whose
  distribution Optuna looks up), an intermediate value and a trial's user attributes
  (all in one upsert: `set_trial_user_attrs`); the final state and values are one upsert
  and one UPDATE, and the completion time is the one written, not read back.

~0.3 ms a write; Optuna's calls per one-epoch trial went from 11-14 ms of CPU to ~4.
`one_transaction` then groups a driver call's writes of one trial (an ask's parameters;
a tell with its last intermediate values and user attributes) into one transaction.
Tests keep every one of Optuna's trial tables identical to what Optuna's storage writes
and check that trials created at once by two storages never share a number. A trial
created from a template (an enqueued point), every write on other databases and every
write the checks refuse take Optuna's own path, so errors (and Optuna's retries of a
trial's creation) are Optuna's own.

What it reaches into below Optuna's public API (the cache it extends, the ORM models of
Optuna's tables, Optuna's session) is imported from `study.search.optuna_private`, which
says why each is needed; tests/study/test_study_optuna_contract.py runs Optuna's own
conformance suite for storages (`StorageTestCase`) on this storage, as a launch builds it.
A pickled copy (Optuna hands storages to other processes that way) reads every trial from
the database: only the driver itself serves its RUNNING trials from memory.

One behaviour differs, by design: a change made to a RUNNING trial by another process
(e.g. failing it by hand from optuna-dashboard) is not seen by the driver's reads; the
driver's next write of that trial is then refused by the state check, with Optuna's
error, and the study reports that error.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from storage.dialects import on_conflict, upsert_insert
from storage.prepared import Prepared
from study.search.optuna_private import (
    _CachedStorage,
    _create_scoped_session,
    _StudyInfo,
    models,
)
from study.search.optuna_retry import Retry, RetryingBackend

_T = TypeVar("_T")

#: Optuna's tables, which the driver's own writes address directly (`DriverStorage`).
_STUDIES = models.StudyModel.__table__
_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_VALUES = models.TrialValueModel.__table__
_INTERMEDIATE = models.TrialIntermediateValueModel.__table__
_USER_ATTRS = models.TrialUserAttributeModel.__table__
#: Does the study hold a WAITING (enqueued) trial? What `ask` looks for before each trial.
_ANY_WAITING = Prepared(
    select(_TRIALS.c.trial_id)
    .where(_TRIALS.c.study_id == bindparam("sid"), _TRIALS.c.state == TrialState.WAITING)
    .limit(1)
)

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

    def __init__(self, backend: RDBStorage, retry: Retry | None = None) -> None:
        if retry is not None:  # Optuna's own paths too (`study.search.optuna_retry`)
            backend = RetryingBackend(backend, retry)
        super().__init__(backend)
        self._retry = retry
        self._running: dict[int, FrozenTrial] = {}
        self._sql = _Statements.for_dialect(backend.engine.name)
        self._scope = threading.local()  # .writes: the deferred writes of `one_transaction`

    def __getstate__(self) -> dict[str, Any]:
        """What a pickled copy keeps: Optuna's cache (its own `__getstate__` drops the
        lock, the backend its engine), without this process's state.

        Optuna pickles a study's storage to hand it to other processes (a storage must
        survive `pickle`: `StorageTestCase.test_pickle_storage`). Dropped: the
        statements (`Prepared` holds a lock and compilations for this engine's
        connections; `__setstate__` builds them again for the new engine), the
        per-thread blocks of `one_transaction`, and the RUNNING trials this driver
        serves from memory: a copy in another process is not the driver that keeps
        them in step, so it reads them from the database, as Optuna's own cache does.
        """
        state = super().__getstate__()
        for name in ("_sql", "_scope"):
            del state[name]
        state["_running"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # a new lock
        self._sql = _Statements.for_dialect(self._backend.engine.name)
        self._scope = threading.local()

    @contextmanager
    def one_transaction(self) -> Iterator[None]:
        """The driver's writes of its unfinished trials in this block, in ONE transaction.

        Why: a driver call such as an ask (a trial and two or three parameters) or a tell
        (user attributes, then the state and value) is several writes, and on a 2-core
        machine each transaction's own CPU (a connection, BEGIN, COMMIT, a state check)
        is taken from the trials. In the block, each write is checked and kept in the
        driver's copy as before but its statement waits; the block's end writes them all,
        with one state check per trial, and a tell in the block writes the waiting ones of
        its trial in its own transaction. Nothing reads them back before then: reads of
        the driver's trials are served from its copies. If the transaction is refused (a
        trial finished by another process, an integrity error), each waiting write is
        made again on its own, exactly as outside a block, so errors stay Optuna's own.
        New trials, and everything on databases without the driver's statements, are
        written at once.
        """
        if self._sql is None or getattr(self._scope, "writes", None) is not None:
            yield  # Optuna's own path throughout, or inside an outer block
            return
        self._scope.writes = []
        self._scope.error = None
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the block's own error is the one to show
                self._write_deferred(self._take_deferred())
            raise
        finally:
            error, self._scope.error = self._scope.error, None
        self._write_deferred(self._take_deferred())
        if error is not None:
            raise error

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
        created = None
        if template_trial is None and self._sql is not None:
            created = self._write_new_trial(study_id)
        if created is None:  # Optuna's own path (a template, other databases, errors)
            trial_id = super().create_new_trial(study_id, template_trial)
        else:
            trial_id = created._trial_id
            with self._lock:
                self._studies.setdefault(study_id, _StudyInfo())
                self._add_trials_to_cache(study_id, [created])
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
        written = None
        if mine is not None and state.is_finished() and self._sql is not None:
            written = self._write_finished(trial_id, state, values)  # its waiting writes too
        else:  # the trial's writes waiting in `one_transaction` come before its new state
            self._write_deferred(self._take_deferred(trial_id))
        if written is not None:
            updated, completed = written
        else:  # Optuna's own path: another state, or its error for a finished trial
            updated = super().set_trial_state_values(trial_id, state, values)
            completed = None
        if updated and state == TrialState.RUNNING:
            # a WAITING (enqueued) trial this driver just started: read it once
            started = self._backend.get_trial(trial_id)
            with self._lock:
                self._running[trial_id] = started
        elif updated and state.is_finished() and mine is not None:
            completed = completed or self._read_completed(mine)
            if completed is not None:
                self._keep_finished(mine, state, values, completed)
        return updated

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        with self._keeping(trial_id) as mine:
            known = None
            if mine is not None and self._sql is not None:
                known = self._known_distribution(trial_id, param_name)
            if known is not None:
                assert self._sql is not None
                check_distribution_compatibility(known, distribution)  # Optuna's ValueError
                row = {
                    "trial_id": trial_id,
                    "param_name": param_name,
                    "param_value": param_value_internal,
                    "distribution_json": distribution_to_json(distribution),
                }
                self._write_running(
                    _Write(
                        trial_id,
                        self._sql.add_param,
                        [row],
                        lambda: super(DriverStorage, self).set_trial_param(
                            trial_id, param_name, param_value_internal, distribution
                        ),
                    )
                )
            else:  # the name's first use in this launch: Optuna looks it up and caches it
                super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            if mine is not None:
                mine.params[param_name] = distribution.to_external_repr(param_value_internal)
                mine.distributions[param_name] = distribution

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        with self._keeping(trial_id) as mine:
            if mine is not None and self._sql is not None:
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                    intermediate_value
                )
                row = {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
                self._write_running(
                    _Write(
                        trial_id,
                        self._sql.put_intermediate,
                        [row],
                        lambda: super(DriverStorage, self).set_trial_intermediate_value(
                            trial_id, step, intermediate_value
                        ),
                    )
                )
            else:
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
        each); this writes exactly the same rows in one upsert statement and one commit
        (on SQLite and PostgreSQL; one Optuna call per attribute elsewhere).
        """
        with self._keeping(trial_id) as mine:
            rows = [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()
            ]

            def optunas_own() -> None:  # and its error for a finished trial
                for name, value in attrs.items():
                    super(DriverStorage, self).set_trial_user_attr(trial_id, name, value)

            if rows and self._sql is not None:
                self._write_running(_Write(trial_id, self._sql.put_user_attr, rows, optunas_own))
            elif rows:
                optunas_own()
            if mine is not None:
                mine.user_attrs.update({k: _as_stored(v) for k, v in attrs.items()})

    def running_trial_ids(self) -> list[int]:
        """The trials served from memory now (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._running)

    def _has_waiting_trials(self, study_id: int) -> bool:
        def read() -> bool:
            with self._transaction() as conn:
                return _ANY_WAITING.execute(conn, {"sid": study_id}).first() is not None

        return self._retrying(read)

    def _retrying(self, fn: Callable[[], _T]) -> _T:
        """`fn()` (one transaction or read), run again while the database is unavailable
        when the driver gave a `retry` (`storage.transactions.DbRetry`)."""
        return fn() if self._retry is None else self._retry(fn)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction of the driver's own statements, on a plain Core connection
        of Optuna's engine, committed at the end and rolled back on any error.

        Errors as Optuna's `_create_scoped_session` gives them (an integrity error as
        it is, any other database error as Optuna's `StorageInternalError`), without
        its ORM session: the session's set-up, its statement handling and its commit
        cost about twice a plain connection's (~80 against ~40 us for one statement),
        and the driver makes four such transactions a trial.
        """
        try:
            with self._backend.engine.begin() as conn:
                yield conn
        except sa_exc.IntegrityError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise StorageInternalError(
                "An exception is raised during the commit of the driver's writes."
            ) from exc

    # -- the driver's own writes (see the module docstring) --------------------------------
    def _write_running(self, write: _Write) -> None:
        """Write `write` in one transaction if its trial is still unfinished in the
        database (Optuna's own check), or keep it for the end of `one_transaction`; a
        write refused by that check takes Optuna's path, which raises Optuna's error."""
        waiting = getattr(self._scope, "writes", None)
        if waiting is not None:
            waiting.append(write)
        else:
            self._write_now(write)

    def _write_now(self, write: _Write) -> None:
        if not self._write_together([write]):
            write.optunas_own()

    def _write_together(self, writes: Sequence[_Write], conn: Connection | None = None) -> bool:
        """`writes` in one transaction (or in `conn`'s), each trial's state checked
        first; False, writing nothing, if one of their trials is finished or gone.

        Like Optuna's writes of parameters, intermediate values and attributes, an
        integrity error (another process wrote the same key first) is ignored: for one
        write, as Optuna ignores it; for several, by making each again on its own.
        """
        assert self._sql is not None
        if conn is None:

            def attempt() -> bool:
                with self._transaction() as own:
                    return self._write_together(writes, own)

            try:
                return self._retrying(attempt)
            except sa_exc.IntegrityError:
                if len(writes) > 1:
                    for write in writes:
                        self._write_now(write)
                return True
        for trial_id in dict.fromkeys(write.trial_id for write in writes):
            state = self._sql.state_of.execute(conn, {"tid": trial_id}).scalar_one_or_none()
            if state is None or state.is_finished():
                return False
        for write in writes:
            write.statement.execute(conn, write.rows)
        return True

    def _take_deferred(self, trial_id: int | None = None) -> list[_Write]:
        """The writes `one_transaction` keeps waiting (those of `trial_id`, if given)."""
        waiting: list[_Write] | None = getattr(self._scope, "writes", None)
        if trial_id is None:
            self._scope.writes = None  # the block ends
            return waiting or []
        if not waiting:
            return []
        mine = [w for w in waiting if w.trial_id == trial_id]
        waiting[:] = [w for w in waiting if w.trial_id != trial_id]
        return mine

    def _write_deferred(self, writes: list[_Write]) -> None:
        """The end of `one_transaction`: its waiting writes together, else one by one."""
        if not writes:
            return
        try:
            if self._write_together(writes):
                return
            for write in writes:  # refused: each on its own, as outside a block
                self._write_now(write)
        except BaseException:
            with self._lock:  # as a failed write drops the copy (`_keeping`)
                for write in writes:
                    self._running.pop(write.trial_id, None)
            raise

    def _write_new_trial(self, study_id: int) -> FrozenTrial | None:
        """Optuna's `_create_new_trial` without a template, as Core statements: under the
        study row's lock, the RUNNING row, then its number (the trials of the study before
        it), in one transaction. None, nothing written, if the study is gone or the
        database refused (Optuna's own path then retries or raises its error)."""
        sql = self._sql
        assert sql is not None
        stamp = _stored_now()

        def attempt() -> tuple[int, int] | None:
            with self._transaction() as conn:
                if sql.lock_study.execute(conn, {"sid": study_id}).first() is None:
                    return None
                row = {"sid": study_id, "state": TrialState.RUNNING, "started": stamp}
                if conn.dialect.insert_returning:
                    trial_id = sql.add_trial.execute(conn, row).scalar_one()
                else:  # SQLite before 3.35: the key as SQLAlchemy finds it
                    trial_id = conn.execute(sql.add_trial_plain, row).inserted_primary_key[0]
                before = sql.count_before.execute(conn, {"sid": study_id, "tid": trial_id})
                number = int(before.scalar_one())
                sql.number_trial.execute(conn, {"tid": trial_id, "num": number})
                return trial_id, number

        try:
            created = self._retrying(attempt)
        except (sa_exc.SQLAlchemyError, StorageInternalError):
            return None
        if created is None:
            return None
        trial_id, number = created
        return FrozenTrial(
            number=number,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=_local(stamp),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=int(trial_id),
        )

    def _write_finished(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None
    ) -> tuple[bool, datetime | None] | None:
        """Optuna's `set_trial_state_values` for a finished state, in three statements.

        Returns (True, the completion time as a read of the database gives it back:
        local time, as Optuna's model converts it), (False, None) where Optuna returns
        False (an integrity error), or None, nothing written, when the trial is no longer
        unfinished in the database: Optuna's own path then raises its error.
        """
        sql = self._sql
        assert sql is not None
        stamp = _stored_now()
        rows = []
        for objective, value in enumerate(values or ()):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            rows.append(
                {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
            )
        waiting = self._take_deferred(trial_id)  # its writes in `one_transaction`: first

        def attempt() -> None:
            with self._transaction() as conn:
                current = sql.lock_state_of.execute(conn, {"tid": trial_id}).scalar_one_or_none()
                if current is None or current.is_finished():
                    raise _Refused
                for write in waiting:
                    write.statement.execute(conn, write.rows)
                if rows:
                    sql.put_value.execute(conn, rows)
                sql.finish.execute(conn, {"tid": trial_id, "new_state": state, "done": stamp})

        try:
            self._retrying(attempt)
        except _Refused:
            self._write_waiting_of_tell(waiting)  # each on its own: Optuna's error, if refused
            return None
        except sa_exc.IntegrityError:
            if waiting:  # as if made before the tell: each on its own, then the tell
                self._write_waiting_of_tell(waiting)
                return self._write_finished(trial_id, state, values)
            return False, None
        return True, _local(stamp)

    def _write_waiting_of_tell(self, waiting: list[_Write]) -> None:
        """A trial's waiting writes, each on its own, from inside a tell. Their error is
        also raised again at the end of `one_transaction`: Tune's `OptunaSearch` logs the
        errors of a tell and goes on, and made before the tell, outside it, the study
        would have ended with this error."""
        try:
            self._write_deferred(waiting)
        except Exception as exc:
            if getattr(self._scope, "writes", None) is not None:
                self._scope.error = exc
            raise

    def _known_distribution(self, trial_id: int, name: str) -> BaseDistribution | None:
        """The distribution this study's `name` has (cached by Optuna after its first use)."""
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None or where[0] not in self._studies:
                return None  # not in Optuna's cache: Optuna's own path
            return self._studies[where[0]].param_distribution.get(name)

    def _read_completed(self, trial: FrozenTrial) -> datetime | None:
        """The completion time the database stored (one query, for Optuna's own path)."""

        def read() -> datetime | None:
            with _create_scoped_session(self._backend.scoped_session) as session:
                # the row alone (its attribute tables load only when touched), converted
                # to local time by Optuna's own model, as a full read converts it
                row = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
                return row.datetime_complete

        try:
            return self._retrying(read)
        except KeyError:
            return None

    def _keep_finished(
        self,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
        completed: datetime,
    ) -> None:
        """Put the driver's copy, now finished, in Optuna's cache of finished trials."""
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


@dataclass(frozen=True)
class _Write:
    """One of the driver's writes of an unfinished trial: its statement and rows, and
    Optuna's own call for the same write (taken when the state check refuses it)."""

    trial_id: int
    statement: Prepared
    rows: list[dict[str, Any]]
    optunas_own: Callable[[], None]


class _Refused(Exception):
    """The trial is finished or gone: the driver's statements are not written."""


def _only_waiting(states: Container[TrialState] | None) -> bool:
    return isinstance(states, tuple | list | set | frozenset) and set(states) == {
        TrialState.WAITING
    }


class _Statements:
    """The driver's writes to Optuna's tables, each statement built once per storage, so
    SQLAlchemy compiles it once and then only binds each call's values.

    The upserts (INSERT ... ON CONFLICT DO UPDATE: what Optuna's find-then-update does,
    in one statement) exist for SQLite and PostgreSQL; `for_dialect` returns None for
    other databases, where every write takes Optuna's own path.
    """

    def __init__(self, insert_with_conflict: Callable[..., Any]) -> None:
        trial_id = bindparam("tid")
        state_of = select(_TRIALS.c.state).where(_TRIALS.c.trial_id == trial_id)
        self.state_of = Prepared(state_of)
        self.lock_state_of = Prepared(state_of.with_for_update())
        self.finish = Prepared(
            update(_TRIALS)
            .where(_TRIALS.c.trial_id == trial_id)
            .values(state=bindparam("new_state"), datetime_complete=bindparam("done"))
        )
        self.add_param = Prepared(insert(_PARAMS))
        study_id = bindparam("sid")
        self.lock_study = Prepared(
            select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == study_id).with_for_update()
        )
        new_trial = insert(_TRIALS).values(
            study_id=study_id,
            number=None,
            state=bindparam("state"),
            datetime_start=bindparam("started"),
        )
        # the new row's key: RETURNING where the database has it, else as SQLAlchemy finds it
        self.add_trial = Prepared(new_trial.returning(_TRIALS.c.trial_id))
        self.add_trial_plain = new_trial
        self.count_before = Prepared(
            select(func.count(_TRIALS.c.trial_id)).where(
                _TRIALS.c.study_id == study_id, _TRIALS.c.trial_id < trial_id
            )
        )
        self.number_trial = Prepared(
            update(_TRIALS).where(_TRIALS.c.trial_id == trial_id).values(number=bindparam("num"))
        )
        self.put_intermediate = _upsert(insert_with_conflict, _INTERMEDIATE, ("trial_id", "step"))
        self.put_value = _upsert(insert_with_conflict, _VALUES, ("trial_id", "objective"))
        self.put_user_attr = _upsert(insert_with_conflict, _USER_ATTRS, ("trial_id", "key"))

    @classmethod
    def for_dialect(cls, dialect: str) -> _Statements | None:
        insert_with_conflict = upsert_insert(dialect)
        return None if insert_with_conflict is None else cls(insert_with_conflict)


def _upsert(
    insert_with_conflict: Callable[..., Any], table: Any, keys: tuple[str, ...]
) -> Prepared:
    """INSERT into `table`, on a conflict of `keys` updating every other column."""
    changing = [c.name for c in table.columns if c.name not in keys and not c.primary_key]
    return Prepared(on_conflict(insert_with_conflict, table, keys, changing))


def _stored_now() -> datetime:
    """Now as Optuna's model stores a time it sets: naive UTC (its setters convert local
    `datetime.now()` this way)."""
    return datetime.now().astimezone(UTC).replace(tzinfo=None)


def _local(stored: datetime) -> datetime:
    """A stored (naive UTC) time as Optuna's model gives it back: naive local time."""
    return stored.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def _as_stored(value: Any) -> Any:
    """The value as the database gives it back (JSON: tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy callers may change without changing the kept one.

    Its own dicts and values list, and its own copy of every attribute value that is not
    a plain scalar (JSON lists and objects); the distributions, which Optuna never
    changes once made, are shared. Why not `copy.deepcopy`: an ask and a tell copy the
    trial three times on the writes thread, and deepcopy rebuilds every distribution
    (a study's trial: ~94 us against ~15 us for this copy).
    """
    twin = copy.copy(trial)
    twin._values = None if trial._values is None else list(trial._values)
    twin._params = dict(trial._params)
    twin._distributions = dict(trial._distributions)
    twin._user_attrs = {key: _own(value) for key, value in trial._user_attrs.items()}
    twin._system_attrs = {key: _own(value) for key, value in trial._system_attrs.items()}
    twin.intermediate_values = dict(trial.intermediate_values)
    return twin


def _own(value: Any) -> Any:
    """`value` itself if it cannot be changed in place, else a deep copy of it."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return copy.deepcopy(value)
