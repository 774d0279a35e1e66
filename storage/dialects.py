"""The INSERT with ON CONFLICT of the database in use, imported only for that database.

SQLAlchemy's generic `insert` has no upsert; SQLite's and PostgreSQL's dialect inserts do.
Importing the PostgreSQL dialect costs about 0.2 s, which every launch of a study on
SQLite (the default) would pay for nothing, so each is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
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
