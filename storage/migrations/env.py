"""Alembic environment for the insgd_* tables.

`storage.migrate` runs alembic programmatically and hands this script an open
connection that already holds the migration lock (config.attributes["connection"]),
so no alembic.ini is needed. Run by hand (`alembic -x url=...`), it opens its own.

Optuna keeps its own tables and its own `alembic_version` in the same database:
we record our revision in `insgd_alembic_version` and only ever look at tables
named `insgd_*`, so neither migration history can touch the other's tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from storage.schema import TABLE_PREFIX, VERSION_TABLE, Base

config = context.config


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate must not see Optuna's tables (it would offer to drop them)."""
    if type_ == "table":
        return bool(name) and str(name).startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def _configure(connection) -> None:  # noqa: ANN001 - alembic passes a Connection
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set sqlalchemy.url")
    from storage.urls import normalize_url

    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
