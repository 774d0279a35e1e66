"""Engines: one per URL and process, tuned for SQLite on a laptop and PostgreSQL on a cluster.

SQLite gets WAL (readers never block the writer, so `insgd-study query` works
while a study runs), a 30 s busy timeout, foreign keys, and SQLAlchemy-emitted
BEGIN so that writes can start with BEGIN IMMEDIATE: a deferred transaction that
reads and then writes can fail with "database is locked" without ever waiting,
an immediate one waits its turn. PostgreSQL goes through psycopg 3 with
pool_pre_ping (clusters drop idle connections) and a short connect timeout, so
an unreachable server is a one-line error within seconds, not a hang.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from storage import migrate
from storage.errors import StorageError
from storage.transactions import WRITE_OPTION, db_reason
from storage.urls import mask_url, parse_url, sqlite_path, upgrade_command

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5

_ENGINES: dict[tuple[int, str], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(url: str | URL) -> Engine:
    """The process's engine for `url` (validated), created on first use.

    Keyed by process id too: an engine inherited through fork() shares sockets
    with its parent and must not be reused.
    """
    parsed = url if isinstance(url, URL) else parse_url(url)
    key = (os.getpid(), parsed.render_as_string(hide_password=False))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _create_engine(parsed)
            _ENGINES[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine of this process (tests, and before dropping a database)."""
    with _ENGINES_LOCK:
        for (pid, _), engine in list(_ENGINES.items()):
            if pid == os.getpid():
                engine.dispose()
        _ENGINES.clear()


def open_database(url: str, *, upgrade: bool = True) -> Engine:
    """Validate `url`, check the server answers, and make sure our schema is at head.

    With `upgrade=True` a missing or older schema is created/migrated (under a lock,
    so concurrent callers are safe). With `upgrade=False` nothing is ever written, a
    read-only user can open a current database, and a missing or older schema is a
    StorageError naming the exact command to run. A SQLite file is never created
    by `upgrade=False`.
    """
    parsed = parse_url(url)
    shown = mask_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed, shown, create=upgrade)
    engine, current = _reachable_revision(parsed, shown)
    head = migrate.head_revision()
    if current == head:
        return engine
    if current is not None and current not in migrate.known_revisions():
        raise StorageError(
            f"the results schema in {shown} is at revision {current!r}, which this "
            f"insgd-study does not know (its newest is {head!r}): upgrade insgd-study"
        )
    if not upgrade:
        where = "has no insgd-study schema" if current is None else f"is at revision {current}"
        raise StorageError(
            f"the results database {shown} {where}; this insgd-study needs {head}: "
            f"run {upgrade_command(url)}"
        )
    log.info("migrating the results schema of %s from %s to %s", shown, current, head)
    try:
        migrate.upgrade_engine(engine)
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot migrate the results schema of {shown}: {db_reason(exc, engine.url)}"
        ) from None
    return engine


def _reachable_revision(parsed: Any, shown: str) -> tuple[Engine, str | None]:
    """The engine of `parsed`, reachable, and its results-schema revision (None if none)."""
    engine = get_engine(parsed)
    check_reachable(engine, shown)
    try:
        return engine, migrate.current_revision(engine)
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot read the schema version of {shown}: {db_reason(exc, engine.url)}"
        ) from None


def open_existing(url: str) -> Engine | None:
    """`open_database(url)` for a caller that creates the database only later, once every
    other check has passed: the engine of a results database that exists (migrated to
    head), or None while there is none (a SQLite file not created yet, a database without
    our schema), in which case nothing is created or written.

    Everything that would make the later creation fail (a malformed URL, an unreachable
    server, a SQLite file whose folder is missing or not writable) is a StorageError now.
    """
    parsed = parse_url(url)
    shown = mask_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed, shown, create=True)
        path = sqlite_path(parsed)
        if path is not None and not Path(path).exists():
            parent = Path(path).expanduser().absolute().parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise StorageError(
                    f"cannot create the SQLite database {shown}: {parent} is not writable"
                )
            return None
    engine, current = _reachable_revision(parsed, shown)
    return None if current is None else open_database(url)


def upgrade(url: str) -> tuple[str | None, str]:
    """Migrate the database at `url` to head; returns (revision before, revision after)."""
    parsed = parse_url(url)
    shown = mask_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed, shown, create=True)
    engine = get_engine(parsed)
    check_reachable(engine, shown)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade_engine(engine)
        return before, migrate.current_revision(engine) or ""
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot migrate the results schema of {shown}: {db_reason(exc, engine.url)}"
        ) from None


def schema_status(url: str) -> tuple[str | None, str]:
    """(revision the database is at or None, revision this code needs); writes nothing."""
    parsed = parse_url(url)
    shown = mask_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed, shown, create=False)
    engine = get_engine(parsed)
    check_reachable(engine, shown)
    try:
        return migrate.current_revision(engine), migrate.head_revision()
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot read the schema version of {shown}: {db_reason(exc, engine.url)}"
        ) from None


def check_reachable(engine: Engine, shown: str | None = None) -> None:
    """Connect once and run `SELECT 1`; any failure is a StorageError naming the masked URL."""
    shown = shown or mask_url(engine.url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot connect to {shown}: {db_reason(exc, engine.url)}") from None


def limit_sqlite_busy_timeout(engine: Engine, seconds: float) -> None:
    """New connections of a SQLite `engine` wait at most `seconds` for another process's
    lock (instead of SQLITE_BUSY_TIMEOUT_S), and pooled ones are replaced: for a caller
    that retries a locked database itself for a bound shorter than that
    (`storage.transactions.DbRetry`). No-op for other databases and in-memory SQLite."""
    if engine.dialect.name != "sqlite" or sqlite_path(engine.url) is None:
        return
    milliseconds = int(max(0.05, min(seconds, SQLITE_BUSY_TIMEOUT_S)) * 1000)

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        if sqlite_path(url) is None:
            # One shared connection, or every checkout would see a new empty database.
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "insgd-study"},
    )


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy emit BEGIN (see _sqlite_on_begin) instead of the sqlite3 module.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: no fsync per commit; a crash of the program loses nothing,
            # a power cut at most the last transactions (SQLite's recommended pairing).
            cursor.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError:
            pass  # a read-only file keeps its journal mode; reading still works
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _check_sqlite_path(url: URL, shown: str, *, create: bool) -> None:
    path = sqlite_path(url)
    if path is None:
        return
    file = Path(path)
    if not create and not file.exists():
        raise StorageError(
            f"no results database at {file} ({shown}); create it with "
            f"{upgrade_command(url)} or run a study first"
        )
    parent = file.expanduser().absolute().parent
    if not parent.is_dir():
        raise StorageError(f"cannot create the SQLite database {shown}: no directory {parent}")
    if file.is_dir():
        raise StorageError(f"cannot open the SQLite database {shown}: {file} is a directory")
