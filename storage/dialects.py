"""The INSERT with ON CONFLICT of the database in use, imported only for that database.

SQLAlchemy's generic `insert` has no upsert; SQLite's and PostgreSQL's dialect inserts do.
Importing the PostgreSQL dialect costs about 0.2 s, which every launch of a study on
SQLite (the default) would pay for nothing, so each is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def upsert_insert(dialect: str) -> Callable[..., Any] | None:
    """`sqlite.insert` or `postgresql.insert` for that dialect name; None for others."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert


def on_conflict(
    insert: Callable[..., Any], table: Any, keys: Sequence[str], updates: Sequence[str]
) -> Any:
    """INSERT into `table` (with `insert`, from `upsert_insert`) that, where a row with the
    same `keys` exists, sets its `updates` columns to the new row's values, or leaves it
    as it is when there are none (DO NOTHING)."""
    stmt = insert(table)
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in updates}
    )
