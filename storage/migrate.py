"""Alembic, run programmatically from the migrations shipped inside this package.

No alembic.ini is needed in the working directory: the script location is this
package's `migrations/` folder, and the revision is kept in
`insgd_alembic_version`, apart from Optuna's own `alembic_version`.

Opening a database that is already current only reads one row, without
importing alembic at all (it costs a quarter of a second at every
`insgd-study query`): the revision chain is also written down here, and a test
checks it against the migration scripts.

Migrating takes a lock first (BEGIN IMMEDIATE on SQLite, an advisory lock on
PostgreSQL) and re-reads the revision under it, so that several processes
opening a fresh database at once migrate it exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from storage.schema import VERSION_TABLE
from storage.transactions import write_connection

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The shipped revisions, oldest first; the last one is what this code needs.
REVISIONS: tuple[str, ...] = (
    "0001_base",
    "0002_analysis_indexes",
    "0003_trial_variant",
    "0004_study_claims",
)
#: Arbitrary constant naming our advisory lock on PostgreSQL ("insgd" in ASCII).
_PG_LOCK_KEY = 0x696E736764


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config pointing at the packaged migrations, optionally bound to a connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return REVISIONS[-1]


def base_revision() -> str:
    return REVISIONS[0]


def known_revisions() -> frozenset[str]:
    return frozenset(REVISIONS)


def script_revisions() -> list[str]:
    """The revision chain as alembic reads it from migrations/versions, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def revision_of(connection: Connection) -> str | None:
    """The revision recorded in the database, or None where our schema was never created."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return revision_of(conn)


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision` under the migration lock; a no-op when already there."""
    target = head_revision() if revision == "head" else revision
    with write_connection(engine) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        if revision_of(conn) == target:
            return  # another process migrated it while we waited for the lock
        from alembic import command

        command.upgrade(alembic_config(conn), revision)
