"""Writes that wait for an unavailable database (`storage.transactions.DbRetry`): which
errors count as "unavailable", the bound, the one-line masked error, a real SQLite lock."""

from __future__ import annotations

import sqlite3
import threading
import time

import psycopg
import pytest
from optuna.exceptions import StorageInternalError
from sqlalchemy import exc as sa_exc

import storage
from storage.engine import limit_sqlite_busy_timeout
from storage.errors import DatabaseUnavailable, StorageError
from storage.transactions import DbRetry, is_unavailable


def _wrapped(orig: BaseException, kind: type = sa_exc.OperationalError) -> BaseException:
    return kind("SELECT 1", {}, orig)


def _raised_from(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


def _raised_from_none(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer from None
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (_wrapped(sqlite3.OperationalError("database is locked")), True),
        (_wrapped(sqlite3.OperationalError("database is busy")), True),
        (_wrapped(sqlite3.OperationalError("no such table: insgd_trials")), False),
        (_wrapped(sqlite3.IntegrityError("UNIQUE"), sa_exc.IntegrityError), False),
        (_wrapped(psycopg.OperationalError("connection failed: Connection refused")), True),
        (_wrapped(psycopg.errors.AdminShutdown("terminating connection")), True),
        (_wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), True),
        (_wrapped(psycopg.InterfaceError("the connection is closed"), sa_exc.InterfaceError), True),
        (_wrapped(psycopg.errors.UndefinedTable("no such table"), sa_exc.ProgrammingError), False),
        (_wrapped(psycopg.errors.QueryCanceled("canceling statement")), False),
        (_wrapped(psycopg.errors.DiskFull("no space left")), False),
        # inside Optuna's wrapper, and under a one-line StorageError raised `from None`
        (
            _raised_from(
                _wrapped(psycopg.errors.AdminShutdown("x")), StorageInternalError("commit")
            ),
            True,
        ),
        (
            _raised_from_none(
                _wrapped(sqlite3.OperationalError("database is locked")), StorageError("x")
            ),
            True,
        ),
        (StorageInternalError("An exception is raised during the commit"), False),
        (DatabaseUnavailable("gave up already"), False),
        (ValueError("bad value"), False),
    ],
)
def test_which_errors_mean_the_database_is_unavailable(error, unavailable) -> None:
    assert is_unavailable(error) is unavailable


def test_an_operation_runs_again_until_the_database_answers() -> None:
    pauses: list[float] = []
    notes: list[str] = []
    retry = DbRetry(60, "postgresql://u:s3cret@db/x", notify=notes.append, sleep=pauses.append)
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) <= 5:
            raise _wrapped(psycopg.OperationalError("server closed the connection unexpectedly"))
        return "written"

    assert retry(write) == "written"
    assert len(calls) == 6
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6]  # backoff, up to 2 s between attempts
    assert len(notes) == 2 and "unavailable" in notes[0] and "is back" in notes[1]
    assert all("s3cret" not in note for note in notes)
    assert retry.outages == 1
    assert retry(lambda: "again") == "again"  # a healthy database: no note, no pause
    assert len(notes) == 2 and retry.outages == 1


def test_a_real_error_is_not_retried() -> None:
    retry = DbRetry(60, "sqlite:///x.db", sleep=lambda s: pytest.fail("no pause expected"))

    def write() -> None:
        raise _wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), sa_exc.IntegrityError)

    with pytest.raises(sa_exc.IntegrityError):
        retry(write)


def test_past_its_bound_one_line_names_the_database_without_its_password() -> None:
    retry = DbRetry(0.3, "postgresql+psycopg://writer:s3cret@db.internal:5432/insgd")
    started = time.monotonic()

    def write() -> None:
        raise _wrapped(
            psycopg.OperationalError(
                'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
                "Connection refused\n\tIs the server running on that host and accepting "
                "TCP/IP connections?"
            )
        )

    with pytest.raises(DatabaseUnavailable) as caught:
        retry(write)
    assert 0.3 <= time.monotonic() - started < 3
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert "writer:***@db.internal" in message and "unavailable for 0.3s" in message
    assert message.endswith("port 5432 failed: Connection refused")
    assert isinstance(caught.value, StorageError)  # still a one-line storage error
    assert DbRetry(0, "sqlite:///x.db")(lambda: 7) == 7  # 0: no retry, a healthy call runs


def test_a_sqlite_file_locked_by_another_process_is_waited_for_then_given_up(sqlite_url):
    engine = storage.open_database(sqlite_url)
    try:
        limit_sqlite_busy_timeout(engine, 0.2)
        writer = storage.ResultWriter(engine, DbRetry(1.0, sqlite_url))
        writer.create_study("s", {"x": 1}, "test")
        path = sqlite_url.removeprefix("sqlite:///")

        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        released = threading.Timer(0.8, lambda: holder.execute("ROLLBACK"))
        released.start()
        started = time.monotonic()
        writer.start_trial("s", 0, {"norm": "l2", "lr": 0.1, "seed": 0})  # waits, then writes
        assert 0.7 < time.monotonic() - started < 5
        released.join()

        holder.execute("BEGIN EXCLUSIVE")  # and now held past the bound
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="unavailable for 1s: database is locked"):
            writer.start_trial("s", 1, {"norm": "l2", "lr": 0.1, "seed": 0})
        assert time.monotonic() - started < 5
        holder.execute("ROLLBACK")
        holder.close()
        rows = storage.queries.list_trials(engine, "s")
        assert [r.trial_number for r in rows] == [0]
    finally:
        storage.dispose_engines()


def test_a_retry_pickles_with_its_bound() -> None:
    import pickle

    retry = DbRetry(7, "postgresql://u:s3cret@db/x", notify=lambda line: None)
    copy = pickle.loads(pickle.dumps(retry))
    assert copy.seconds == 7 and copy.shown == retry.shown and copy.notify is None
    assert copy(lambda: 3) == 3
