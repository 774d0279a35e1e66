"""Read access to the Optuna study that a launch wrote beside our results tables.

Both the report (parameter importances) and the dashboard (attaching the report)
open Optuna's side of the database; this module is that one door, so neither has
to import the other. It never creates Optuna's tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def optuna_url(url: str) -> str:
    """`url` with its driver spelled out (psycopg 3 for PostgreSQL), as our tables use it:
    Optuna given a bare `postgresql://` would look for psycopg2, which is not installed."""
    from storage import normalize_url

    return normalize_url(url)


def optuna_study_exists(url: str, study_name: str) -> bool:
    """Whether Optuna's tables hold `study_name`, without letting Optuna create its tables."""
    import sqlalchemy as sa

    engine = sa.create_engine(optuna_url(url))
    try:
        if not sa.inspect(engine).has_table("studies"):
            return False
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM studies WHERE study_name = :n"), {"n": study_name}
            ).first()
        return found is not None
    finally:
        engine.dispose()


@contextmanager
def open_optuna_study(url: str, study_name: str) -> Iterator[Any]:
    """The Optuna study, its storage's connections closed on exit (a long-running
    launch or a test dropping the database must not be left holding them)."""
    import optuna

    from study.search.optuna_storage import rdb_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = rdb_storage(optuna_url(url))
    try:
        yield optuna.load_study(study_name=study_name, storage=storage)
    finally:
        storage.engine.dispose()
