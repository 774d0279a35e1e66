"""Write transactions that survive concurrent writers.

Writes take the lock up front (BEGIN IMMEDIATE on SQLite, see `storage.engine`)
and are retried, whole, when the database says "busy" (SQLite "database is
locked" past the busy timeout) or aborts a transaction to break a deadlock or
a serialization conflict (PostgreSQL 40P01 / 40001). Every write in this
package is an idempotent upsert, so re-running a transaction is always safe.

`DbRetry` goes further for a caller that would rather wait than fail (the driver of a
study, whose trials keep training): a transaction that fails because the database is
*unavailable* (the server is restarting or unreachable, the connection was reset, a
SQLite file stays locked by another process) is run again, with backoff, for a bounded
time; past it, `DatabaseUnavailable` (one line, password masked).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from storage.errors import DatabaseUnavailable, StorageError
from storage.urls import hide_secrets, mask_url

T = TypeVar("T")

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE_OPTION = "insgd_write"
MAX_ATTEMPTS = 8
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_INSUFFICIENT_PRIVILEGE = "42501"
#: PostgreSQL errors of a server that is going away or not there yet: admin/crash
#: shutdown, "cannot connect now" (starting up, shutting down), too many connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
#: Backoff between attempts while the database is unavailable (seconds).
RETRY_FIRST_PAUSE = 0.1
RETRY_MAX_PAUSE = 2.0


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions take the write lock first (BEGIN IMMEDIATE on SQLite)."""
    return engine.connect().execution_options(**{WRITE_OPTION: True})


def is_retryable(exc: BaseException) -> bool:
    """True for lock contention and deadlock/serialization aborts, false for real errors."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database is busy" in message


def is_unavailable(exc: BaseException | None) -> bool:
    """True when `exc` (or an error it was raised from, e.g. inside Optuna's
    `StorageInternalError`) says the database cannot be reached or used right now: a
    connection that failed or was reset, a PostgreSQL server shutting down or starting
    up, a SQLite database locked or busy. False for anything a retry cannot fix (bad
    SQL, a constraint, a missing table, a permission) and for `DatabaseUnavailable`
    itself (a retry that already gave up)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DatabaseUnavailable):
            return False
        seen.add(id(exc))
        if isinstance(exc, DBAPIError):
            if exc.connection_invalidated or _unavailable_driver_error(exc.orig):
                return True
        elif _unavailable_driver_error(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _unavailable_driver_error(orig: BaseException | None) -> bool:
    if orig is None:
        return False
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "database is locked" in message or "database is busy" in message
    if type(orig).__module__.split(".")[0] == "psycopg":
        import psycopg

        if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
            state = getattr(orig, "sqlstate", None)
            # no SQLSTATE: the client lost or never got its connection
            return state is None or state.startswith("08") or state in _UNAVAILABLE_SQLSTATES
        return False
    return isinstance(orig, ConnectionError)


class DbRetry:
    """Run a database operation again while the database is unavailable, for at most
    `seconds` per operation (`is_unavailable`); past that, `DatabaseUnavailable`.

    Only for operations that are safe to run again after a failure: one transaction
    (a failed one wrote nothing; idempotent upserts make even a commit whose answer was
    lost safe) or a read. `notify` gets one line when the database first fails and one
    when it answers again. Pauses grow from 0.1 s to 2 s, so a database that comes back
    is noticed within about 2 s. `seconds` 0 runs the operation once.
    """

    def __init__(
        self,
        seconds: float,
        url: str | URL,
        notify: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.seconds = float(seconds)
        self.url = url if isinstance(url, URL) else make_url(url)
        self.shown = mask_url(self.url)
        self.notify = notify
        self._sleep = sleep
        self._lock = threading.Lock()
        self.outages = 0  # how many times an operation found the database unavailable

    def __call__(self, fn: Callable[[], T]) -> T:
        """`fn()`, run again while it fails with the database unavailable."""
        pause = RETRY_FIRST_PAUSE
        deadline: float | None = None
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.seconds
                    with self._lock:
                        self.outages += 1
                    self._say(
                        f"database {self.shown} unavailable ({db_reason(exc, self.url)}): retrying "
                        f"for up to {self.seconds:g}s"
                    )
                if now >= deadline:
                    raise DatabaseUnavailable(
                        f"database {self.shown} unavailable for {self.seconds:g}s: "
                        f"{db_reason(exc, self.url)}"
                    ) from None
                self._sleep(min(pause, deadline - now))
                pause = min(pause * 2, RETRY_MAX_PAUSE)
                continue
            if deadline is not None:
                self._say(f"database {self.shown} is back; writing on")
            return result

    def __getstate__(self) -> dict[str, object]:
        # a copy (e.g. inside a pickled Optuna storage) keeps the bound, not the notes
        return {"seconds": self.seconds, "url": self.url, "outages": self.outages}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["seconds"], state["url"])  # type: ignore[misc, arg-type]
        self.outages = int(state["outages"])  # type: ignore[call-overload]

    def _say(self, line: str) -> None:
        if self.notify is not None:
            try:
                self.notify(line)
            except Exception:  # noqa: BLE001, S110 - a note must never stop a write
                pass


def run_write(engine: Engine, work: Callable[[Connection], T], retry: DbRetry | None = None) -> T:
    """Run `work(conn)` in one write transaction, retrying it whole on contention
    (and, with `retry`, while the database is unavailable: `DbRetry`).

    What a user can fix (a read-only file or role, a lost server, a lock that never
    cleared) becomes a StorageError naming the masked URL; anything else is a bug
    and keeps its traceback.
    """

    def once() -> T:
        with write_connection(engine) as conn, conn.begin():
            return work(conn)

    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return once() if retry is None else retry(once)
        except DBAPIError as exc:
            if attempt < MAX_ATTEMPTS and is_retryable(exc):
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
                continue
            insufficient = getattr(exc.orig, "sqlstate", None) == _INSUFFICIENT_PRIVILEGE
            if isinstance(exc, OperationalError) or insufficient:
                where = mask_url(engine.url)
                raise StorageError(
                    f"cannot write to {where}: {db_reason(exc, engine.url)}"
                ) from None
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def db_reason(exc: BaseException, url: URL | None = None) -> str:
    """The driver's own first line, without SQLAlchemy's boilerplate or any secret of `url`
    (its password, a `?password=` query parameter)."""
    orig = _driver_error(exc)
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(orig).__name__
    return reason if url is None else hide_secrets(reason, url)


def _driver_error(exc: BaseException) -> BaseException:
    """The database driver's own error behind `exc`: inside SQLAlchemy's wrapper, or the
    error another library raised `exc` from (Optuna's StorageInternalError); else `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            return current.orig if current.orig is not None else current
        if isinstance(current, sqlite3.Error):
            return current
        current = current.__cause__
    return exc
