"""The write API: studies, trials and epochs, as idempotent upserts.

Ray may deliver a result twice, a driver may be restarted and replay a trial,
and on a cluster several processes may write one study: every write here is an
INSERT ... ON CONFLICT keyed by (study, trial number[, epoch]), so a retried
write updates the row it wrote before instead of adding another. A trial's
final row and all its epoch rows commit in one transaction, so a reader never
sees a COMPLETE trial with half its curve.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.engine import Connection, Engine

from storage import queries
from storage.dialects import on_conflict, upsert_insert
from storage.errors import StorageError
from storage.prepared import Prepared
from storage.schema import COMPLETE, FAIL, RUNNING, Epoch, Study, Trial, utcnow
from storage.transactions import DbRetry, run_write
from storage.urls import mask_url
from storage.values import epoch_values, jsonable, trial_values

_TRIAL_KEY = ["study_id", "trial_number"]
_EPOCH_KEY = ["trial_id", "epoch"]
_UPSERTS: dict[tuple[Any, ...], Prepared] = {}
_SETS: dict[tuple[str, ...], Prepared] = {}  # UPDATE trials statements by column set
#: The per-epoch hot path's statements, compiled once and run on the DBAPI cursor (`Prepared`).
_TRIAL_ID = Prepared(
    select(Trial.id).where(
        Trial.study_id == bindparam("sid"), Trial.trial_number == bindparam("num")
    )
)
_EPOCH_COUNT = select(func.count()).where(Epoch.trial_id == bindparam("tid")).scalar_subquery()
_PROGRESS = {
    diverged: Prepared(
        update(Trial)
        .where(Trial.id == bindparam("tid"))
        .values(epochs_completed=_EPOCH_COUNT, **({"diverged": True} if diverged else {}))
    )
    for diverged in (False, True)
}
_EPOCH_SUMMARY = Prepared(
    select(Epoch.val_accuracy, Epoch.train_loss, Epoch.diverged)
    .where(Epoch.trial_id == bindparam("tid"))
    .order_by(Epoch.epoch)
)
_OLD_PARAMS = Prepared(
    select(Trial.params).where(
        Trial.study_id == bindparam("sid"), Trial.trial_number == bindparam("num")
    )
)
#: What finish_trial computes from the epoch rows when the caller leaves it out.
_SUMMARY_COLUMNS = frozenset(
    {"epochs_completed", "final_val_accuracy", "best_val_accuracy", "final_train_loss", "diverged"}
)
#: The writes `ResultWriter.write_all` takes, by method name.
_BATCHABLE = ("start_trial", "record_epoch", "finish_trial")
#: One write for `ResultWriter.write_all`: a method's name and its positional arguments.
TrialWrite = tuple[str, tuple[Any, ...]]


class ResultWriter:
    """Writes one process's view of studies into the results database.

    Safe to use from several processes at once (each with its own writer); all
    methods validate their input before touching the database and raise
    StorageError (one line, password masked) for anything a caller can fix.

    With `retry` (`storage.transactions.DbRetry`) every write is run again while the
    database is unavailable, for that bound; past it, `DatabaseUnavailable`.
    """

    def __init__(self, engine: Engine, retry: DbRetry | None = None) -> None:
        self.engine = engine
        self.retry = retry
        self._study_ids: dict[str, int] = {}

    # -- studies ---------------------------------------------------------------------------

    def get_study(self, name: str) -> queries.StudyRow | None:
        return queries.get_study(self.engine, name)

    def create_study(
        self, name: str, config: Mapping[str, Any], code_version: str
    ) -> queries.StudyRow:
        """Create the study, or return it if it already exists with the same configuration.

        An existing study with a *different* configuration is a StorageError: mixing
        two search spaces under one name would make its analysis meaningless.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise StorageError(f"a study name must be 1-200 characters, got {name!r}")
        if not isinstance(config, Mapping):
            raise StorageError(f"a study config must be a mapping, got {type(config).__name__}")
        document = jsonable(config)
        version = str(code_version or "")[:200]

        def work(conn: Connection) -> None:
            stmt = _insert(conn)(Study).values(
                name=name, created_at=utcnow(), config=document, code_version=version
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))

        run_write(self.engine, work, self.retry)
        row = self.get_study(name)
        assert row is not None
        if _canonical(row.config) != _canonical(document):
            raise StorageError(
                f"study {name!r} already exists in {mask_url(self.engine.url)} with a "
                "different configuration; choose another study name"
            )
        return row

    # -- trials ----------------------------------------------------------------------------

    def start_trial(self, study: str, trial_number: int, fields: Mapping[str, Any]) -> None:
        """Insert or reset the trial as RUNNING with its configuration and start time."""
        run_write(self.engine, self._start_work(study, trial_number, fields), self.retry)

    def record_epoch(
        self, study: str, trial_number: int, epoch: int, metrics: Mapping[str, Any]
    ) -> None:
        """Upsert one epoch's metrics (a RUNNING trial row is created if there is none)."""
        number = _trial_number(trial_number)
        row = epoch_values(epoch, metrics)
        run_write(self.engine, self._epoch_rows_work(study, number, [row]), self.retry)

    def finish_trial(
        self,
        study: str,
        trial_number: int,
        fields: Mapping[str, Any],
        epochs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Write the trial's outcome and all its epoch rows in one transaction.

        `state` defaults to COMPLETE and `finished_at` to now. Each epoch mapping needs
        an `epoch` key (EpochMetrics.to_dict() has one). Summary columns the caller
        leaves out (epochs_completed, final/best val accuracy, final train loss,
        diverged) are computed from the trial's epoch rows.
        """
        rows = _finish_epochs(fields, epochs)
        run_write(self.engine, self._finish_work(study, trial_number, fields, rows), self.retry)

    def write_all(self, writes: Sequence[TrialWrite]) -> None:
        """Several trial writes in ONE transaction, in order: each a (method name, its
        arguments) pair of `start_trial`, `record_epoch` or `finish_trial`.

        Why: the driver writes a one-epoch trial's last epoch, its end and the next
        trial's start within milliseconds of each other, and each transaction of its
        own costs the driver's writes thread more CPU (connection, BEGIN, COMMIT) than
        the rows in it; on a 2-core machine that CPU is taken from the trials. The rows
        are the same as the single calls write, with one shortcut: epochs followed in
        the same batch by their trial's `finish_trial` are written by that finish (as
        its `epochs`), which computes the trial's summary from them anyway. Everything
        is validated before the transaction starts; if any write fails, none is kept.
        """
        works: list[Callable[[Connection], Any]] = []
        waiting: dict[tuple[str, int], list[dict[str, Any]]] = {}  # epochs for a finish

        def flush_epochs(key: tuple[str, int]) -> None:
            rows = waiting.pop(key, None)
            if rows:
                works.append(self._epoch_rows_work(key[0], key[1], rows))

        finishing = {(a[0], _trial_number(a[1])) for n, a in writes if n == "finish_trial"}
        for name, args in writes:
            if name not in _BATCHABLE:
                raise StorageError(f"write_all cannot run {name!r}; use one of {_BATCHABLE}")
            study, number = args[0], _trial_number(args[1])
            key = (study, number)
            if name == "record_epoch":
                row = epoch_values(args[2], args[3])
                if key in finishing:
                    waiting.setdefault(key, []).append(row)
                else:
                    works.append(self._epoch_rows_work(study, number, [row]))
            elif name == "finish_trial":
                given = _finish_epochs(args[2], args[3] if len(args) > 3 else None)
                finishing.discard(key)
                works.append(
                    self._finish_work(study, number, args[2], waiting.pop(key, []) + given)
                )
            else:
                flush_epochs(key)  # a restart of a trial: its earlier epochs come first
                works.append(self._start_work(study, number, args[2]))
        for key in list(waiting):
            flush_epochs(key)
        if not works:
            return

        def work(conn: Connection) -> None:
            for each in works:
                each(conn)

        run_write(self.engine, work, self.retry)

    def _start_work(
        self, study: str, trial_number: int, fields: Mapping[str, Any]
    ) -> Callable[[Connection], None]:
        number = _trial_number(trial_number)
        values = trial_values(fields)
        values["state"] = RUNNING
        keep: frozenset[str] = frozenset()
        if values.get("started_at") is None:
            # No start time given: now for a new row; an existing row keeps its own.
            values["started_at"] = utcnow()
            keep = frozenset({"started_at"})
        values.setdefault("finished_at", None)
        values.setdefault("error", None)

        def work(conn: Connection) -> None:
            study_id = self._study_id(conn, study)
            _upsert_trial(conn, study_id, number, values, keep)  # a (re)start replaces params

        return work

    def _epoch_rows_work(
        self, study: str, number: int, rows: list[dict[str, Any]]
    ) -> Callable[[Connection], None]:
        diverged = any(row["diverged"] for row in rows)

        def work(conn: Connection) -> None:
            study_id = self._study_id(conn, study)
            trial_id = _ensure_trial(conn, study_id, number)
            _upsert_epochs(conn, trial_id, rows)
            _PROGRESS[diverged].execute(conn, {"tid": trial_id})

        return work

    def _finish_work(
        self,
        study: str,
        trial_number: int,
        fields: Mapping[str, Any],
        rows: list[dict[str, Any]],
    ) -> Callable[[Connection], None]:
        number = _trial_number(trial_number)
        values = trial_values(fields)
        values.setdefault("state", COMPLETE)
        if values.get("finished_at") is None:
            values["finished_at"] = utcnow()
        given = set(values)

        def work(conn: Connection) -> None:
            study_id = self._study_id(conn, study)
            _merge_params(conn, study_id, number, values)
            trial_id = _upsert_trial(conn, study_id, number, values)
            if rows:
                _upsert_epochs(conn, trial_id, rows)
            if _SUMMARY_COLUMNS <= given:
                return
            summary = _summarize(conn, trial_id)
            missing = {k: v for k, v in summary.items() if k not in given and v is not None}
            if missing:
                _set_columns(tuple(missing)).execute(conn, _set_params(trial_id, missing))

        return work

    def fail_running_trials(
        self, study: str, error: str | None = None, *, from_number: int = 0
    ) -> list[int]:
        """Mark every RUNNING trial of `study` FAIL (a driver that died left them so);
        returns their trial numbers, in order. With `from_number`, only trials numbered
        from it on (a launch's own trials: it numbers them from there)."""
        message = error or "the study stopped while this trial was running"

        def work(conn: Connection) -> list[int]:
            study_id = self._study_id(conn, study)
            running = (
                (Trial.study_id == study_id)
                & (Trial.state == RUNNING)
                & (Trial.trial_number >= int(from_number))
            )
            numbers = list(
                conn.scalars(select(Trial.trial_number).where(running).order_by(Trial.trial_number))
            )
            if numbers:
                conn.execute(
                    update(Trial)
                    .where(running)
                    .values(
                        state=FAIL,
                        finished_at=utcnow(),
                        error=func.coalesce(Trial.error, message),
                    )
                )
            return numbers

        return run_write(self.engine, work, self.retry)

    # -- helpers ---------------------------------------------------------------------------

    def _study_id(self, conn: Connection, name: str) -> int:
        cached = self._study_ids.get(name)
        if cached is not None:
            return cached
        study_id = conn.scalar(select(Study.id).where(Study.name == name))
        if study_id is None:
            raise StorageError(
                f"no study named {name!r} in {mask_url(self.engine.url)}; create it first"
            )
        self._study_ids[name] = study_id
        return study_id


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT, which has on_conflict_do_update/do_nothing."""
    insert = upsert_insert(conn.dialect.name)
    if insert is None:  # pragma: no cover - storage.engine accepts only these two
        raise StorageError(f"unsupported database backend {conn.dialect.name!r}")
    return insert


def _upsert(
    conn: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    keys: list[str],
    *,
    update: bool = True,
    keep: frozenset[str] = frozenset(),
    returning: Any = None,
) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE the given columns (or DO NOTHING).

    Statements are built once per (backend, table, column set) and executed with the
    rows as parameters, so SQLAlchemy compiles each shape only once per process.
    Columns in `keep` are written by an insert but left alone by an update. With
    `returning` (one row), the value of that column for the row written.
    """
    columns = tuple(rows[0])
    cache_key = (conn.dialect.name, table.name, columns, tuple(keys), update, keep, str(returning))
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        updates = [c for c in columns if c not in keys and c not in keep] if update else []
        stmt = on_conflict(_insert(conn), table, keys, updates)
        if returning is not None:
            stmt = stmt.returning(returning)
        stmt = _UPSERTS[cache_key] = Prepared(stmt)
    if returning is not None:
        return stmt.execute(conn, rows[0]).scalar_one()
    stmt.execute(conn, rows)
    return None


def _upsert_trial(
    conn: Connection,
    study_id: int,
    number: int,
    values: dict[str, Any],
    keep: frozenset[str] = frozenset(),
) -> int:
    row = {"study_id": study_id, "trial_number": number, **values}
    return int(_upsert(conn, Trial.__table__, [row], _TRIAL_KEY, keep=keep, returning=Trial.id))


def _ensure_trial(conn: Connection, study_id: int, number: int) -> int:
    row = {"study_id": study_id, "trial_number": number, "state": RUNNING, "started_at": utcnow()}
    _upsert(conn, Trial.__table__, [row], _TRIAL_KEY, update=False)
    return _trial_id(conn, study_id, number)


def _trial_id(conn: Connection, study_id: int, number: int) -> int:
    trial_id = _TRIAL_ID.execute(conn, {"sid": study_id, "num": number}).scalar()
    assert trial_id is not None
    return int(trial_id)


def _merge_params(conn: Connection, study_id: int, number: int, values: dict[str, Any]) -> None:
    """Merge new `params` keys into the stored ones, so finish_trial keeps start_trial's."""
    if "params" not in values:
        return
    old = _OLD_PARAMS.execute(conn, {"sid": study_id, "num": number}).scalar()
    if old:
        values["params"] = {**old, **values["params"]}


def _set_columns(columns: tuple[str, ...]) -> Prepared:
    """UPDATE trials SET these columns WHERE id = :tid, built once per column set."""
    stmt = _SETS.get(columns)
    if stmt is None:
        values = {c: bindparam(f"set_{c}") for c in columns}  # column names are reserved
        stmt = _SETS[columns] = Prepared(
            update(Trial).where(Trial.id == bindparam("tid")).values(values)
        )
    return stmt


def _set_params(trial_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
    return {"tid": trial_id, **{f"set_{c}": v for c, v in values.items()}}


def _upsert_epochs(conn: Connection, trial_id: int, rows: Iterable[dict[str, Any]]) -> None:
    now = utcnow()
    by_epoch = {row["epoch"]: row for row in rows}  # a repeated epoch: the last one wins
    batch = [{**row, "trial_id": trial_id, "recorded_at": now} for row in by_epoch.values()]
    if batch:
        _upsert(conn, Epoch.__table__, batch, _EPOCH_KEY)


def _summarize(conn: Connection, trial_id: int) -> dict[str, Any]:
    rows = _EPOCH_SUMMARY.execute(conn, {"tid": trial_id}).all()  # (val acc, train loss, diverged)
    if not rows:
        return {}
    accuracies = [r[0] for r in rows if r[0] is not None]
    return {
        "epochs_completed": len(rows),
        "final_val_accuracy": rows[-1][0],
        "best_val_accuracy": max(accuracies) if accuracies else None,
        "final_train_loss": rows[-1][1],
        "diverged": any(r[2] for r in rows),
    }


def _finish_epochs(
    fields: Mapping[str, Any], epochs: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """finish_trial's epoch rows: `epochs`, else a list under the fields' "epochs" key."""
    if epochs is None and isinstance(fields, Mapping):
        listed = fields.get("epochs")
        epochs = listed if isinstance(listed, list | tuple) else None
    return [_epoch_row(item) for item in (epochs or [])]


def _epoch_row(item: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(item, Mapping) or "epoch" not in item:
        raise StorageError("each epoch passed to finish_trial must be a mapping with an 'epoch'")
    return epoch_values(item["epoch"], item)


def _trial_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        # numpy integers and the like: accept only exact non-negative integers
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if isinstance(value, bool) or number < 0 or number != value:
            raise StorageError(f"trial_number must be an integer >= 0, got {value!r}")
        return number
    return value


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
