"""Write transactions that survive concurrent writers.

Writes take the lock up front (BEGIN IMMEDIATE on SQLite, see `storage.engine`)
and are retried, whole, when the database says "busy" (SQLite "database is
locked" past the busy timeout) or aborts a transaction to break a deadlock or
a serialization conflict (PostgreSQL 40P01 / 40001). Every write in this
package is an idempotent upsert, so re-running a transaction is always safe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from storage.errors import StorageError
from storage.urls import hide_secrets, mask_url

T = TypeVar("T")

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE_OPTION = "insgd_write"
MAX_ATTEMPTS = 8
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_INSUFFICIENT_PRIVILEGE = "42501"


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


def run_write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work(conn)` in one write transaction, retrying it whole on contention.

    What a user can fix (a read-only file or role, a lost server, a lock that never
    cleared) becomes a StorageError naming the masked URL; anything else is a bug
    and keeps its traceback.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with write_connection(engine) as conn, conn.begin():
                return work(conn)
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
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(orig).__name__
    return reason if url is None else hide_secrets(reason, url)
