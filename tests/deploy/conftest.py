"""Fixtures for the deployment tests: deploy/postgres/roles.sql applied to a fresh database.

Roles are cluster-wide, so every use creates its own writer/reader pair under unique names
(with random passwords, set through roles.sql's environment variables) and drops them again
after DROP OWNED BY in the test's database, which conftest's `postgres_url` creates and
drops. Helpers are handed out as a fixture (`roles_sql`) because, under
--import-mode=importlib, a conftest is not importable by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "deploy" / "postgres" / "roles.sql"


def psql() -> str:
    path = shutil.which("psql")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("psql is required under CI=true")
        pytest.skip("psql not installed")
    return path


def admin_env(admin_url: str) -> dict[str, str]:
    """libpq's environment for the administrator of conftest's PostgreSQL (no INSGD_*)."""
    url = make_url(admin_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INSGD_"))}
    env.update(
        PGHOST=url.host or "127.0.0.1",
        PGPORT=str(url.port or 5432),
        PGUSER=url.username or "postgres",
    )
    if url.password:
        env["PGPASSWORD"] = url.password
    return env


def run_roles_sql(
    admin_url: str, variables: dict[str, str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`psql -v NAME=VALUE ... -f deploy/postgres/roles.sql` as the administrator."""
    argv = [psql(), "-X", "-q", "-d", "postgres", "-f", str(ROLES_SQL)]
    for key, value in variables.items():
        argv += ["-v", f"{key}={value}"]
    return subprocess.run(
        argv,
        env={**admin_env(admin_url), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def drop_roles(admin_url: str, *roles: str) -> None:
    """Undo roles.sql: DROP OWNED one role at a time (PostgreSQL 15 trips over a default-ACL
    entry shared by two roles in one statement), then DROP ROLE."""
    from storage.engine import dispose_engines

    dispose_engines()
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(:r)"
                ),
                {"r": list(roles)},
            )
            for role in roles:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
                ).first()
                if exists:
                    conn.execute(sa.text(f'DROP OWNED BY "{role}" CASCADE'))
            for role in roles:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    finally:
        engine.dispose()


@pytest.fixture
def roles_sql() -> SimpleNamespace:
    """The helpers above, for test modules."""
    return SimpleNamespace(
        psql=psql, admin_env=admin_env, run=run_roles_sql, drop=drop_roles, path=ROLES_SQL
    )


@pytest.fixture
def pg_roles(postgres_url: str) -> Iterator[SimpleNamespace]:
    """roles.sql applied to a fresh database, with unique role names and random passwords.

    Yields admin_url, db, writer, reader, writer_password, reader_password, writer_url,
    reader_url (TCP, as conftest's server) and psql_output.
    """
    tag = uuid.uuid4().hex[:10]
    url = make_url(postgres_url)
    roles = SimpleNamespace(
        admin_url=postgres_url,
        db=url.database,
        writer=f"insgd_w_{tag}",
        reader=f"insgd_r_{tag}",
        writer_password=f"wpw-{uuid.uuid4().hex}",
        reader_password=f"rpw-{uuid.uuid4().hex}",
    )
    try:
        proc = run_roles_sql(
            postgres_url,
            {"dbname": roles.db, "writer": roles.writer, "reader": roles.reader},
            env={
                "INSGD_WRITER_PASSWORD": roles.writer_password,
                "INSGD_READER_PASSWORD": roles.reader_password,
            },
        )
        assert proc.returncode == 0, proc.stderr
        roles.psql_output = proc.stdout + proc.stderr
        roles.writer_url = url.set(
            username=roles.writer, password=roles.writer_password
        ).render_as_string(hide_password=False)
        roles.reader_url = url.set(
            username=roles.reader, password=roles.reader_password
        ).render_as_string(hide_password=False)
        yield roles
    finally:
        drop_roles(postgres_url, roles.writer, roles.reader)
