"""URLs: precedence, validation, masking, and one clear error for every way a URL can be bad."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import storage
from storage.errors import StorageError
from storage.urls import DEFAULT_URL, ENV_VAR, mask_url, normalize_url, parse_url, resolve_url


def test_resolve_url_precedence_flag_then_env_then_default(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///studies.db"
    monkeypatch.setenv(ENV_VAR, "sqlite:///from-env.db")
    assert resolve_url(None) == "sqlite:///from-env.db"
    assert resolve_url("  ") == "sqlite:///from-env.db"
    assert resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_mask_url_hides_passwords_even_in_malformed_urls() -> None:
    assert mask_url("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert "hunter2" not in mask_url("postgresql://bob:hunter2@db:notaport/x")
    assert "hunter2" not in mask_url("weird+scheme://bob:hunter2@")
    assert mask_url("sqlite:///studies.db") == "sqlite:///studies.db"
    assert mask_url("postgresql://bob@db/x") == "postgresql://bob@db/x"


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h:5433/db", "postgresql+psycopg"),
        ("sqlite:///rel.db", "sqlite"),
        ("sqlite+pysqlite:////abs/x.db", "sqlite"),
        ("sqlite://", "sqlite"),
    ],
)
def test_supported_schemes_map_to_psycopg3_and_pysqlite(url: str, driver: str) -> None:
    assert parse_url(url).drivername == driver
    assert normalize_url(url).startswith(driver + "://")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://u:topsecret@h/db", "unsupported database URL scheme 'mysql'"),
        ("postgresql+psycopg2://u:topsecret@h/db", "unsupported database URL scheme"),
        ("studies.db", "did you mean sqlite:///studies.db"),
        ("postgresql://u:topsecret@h:notaport/db", "malformed database URL"),
        ("sqlite://u:topsecret@host/x.db", "a SQLite URL has no host"),
        ("postgresql://u:topsecret@/db", "names no host"),
        ("postgresql://u:topsecret@h", "names no database"),
        ("", "empty database URL"),
    ],
)
def test_bad_urls_are_one_line_storage_errors_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(StorageError) as info:
        storage.open_database(url)
    message = str(info.value)
    assert fragment in message
    assert "topsecret" not in message
    assert "\n" not in message


def test_unreachable_server_is_a_quick_masked_error() -> None:
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.open_database("postgresql://postgres:topsecret@127.0.0.1:1/test")
    message = str(info.value)
    assert time.monotonic() - start < 10
    assert message.startswith("cannot connect to postgresql://postgres:***@127.0.0.1:1/test")
    assert "topsecret" not in message and "\n" not in message


def test_missing_postgres_database_is_a_storage_error(postgres_url: str) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/insgd_no_such_database"
    with pytest.raises(StorageError, match="does not exist"):
        storage.open_database(missing)


def test_sqlite_in_a_missing_directory_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nowhere/studies.db"
    with pytest.raises(StorageError, match="no directory"):
        storage.open_database(url)
    assert not (tmp_path / "nowhere").exists()


def test_read_only_open_of_a_missing_sqlite_file_never_creates_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/absent.db"
    with pytest.raises(StorageError) as info:
        storage.open_database(url, upgrade=False)
    assert f"insgd-study db upgrade --storage {url}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_passwords_never_reach_logs_or_messages(postgres_url: str, caplog) -> None:
    # The test server trusts local connections, so a password is accepted and ignored.
    with_password = postgres_url.replace("postgres@", "postgres:topsecret@")
    caplog.set_level(logging.DEBUG)
    engine = storage.open_database(with_password)
    assert "migrating the results schema of" in caplog.text  # the log line exists ...
    assert "topsecret" not in caplog.text  # ... and is masked
    assert "***" in caplog.text
    assert "topsecret" not in repr(engine)
    storage.dispose_engines()


def test_engines_are_cached_per_url(sqlite_url: str) -> None:
    first = storage.open_database(sqlite_url)
    assert storage.open_database(sqlite_url) is first
    storage.dispose_engines()


def test_mask_url_hides_password_query_parameters() -> None:
    from sqlalchemy.engine import make_url

    assert (
        mask_url("postgresql://bob@db/x?password=hunter2") == "postgresql://bob@db/x?password=***"
    )
    masked = mask_url("postgresql://bob@db/x?sslmode=require&PassWord=hunter2&sslpassword=k3y")
    assert "hunter2" not in masked and "k3y" not in masked and "sslmode=require" in masked
    assert "hunter2" not in mask_url(make_url("postgresql://bob@db/x?password=hunter2"))
    # repeated, and both forms at once
    masked = mask_url("postgresql://bob:one1@db/x?password=two2&password=three3")
    assert not {"one1", "two2", "three3"} & set(masked.replace("&", " ").split())
    assert all(s not in masked for s in ("one1", "two2", "three3"))
    # too broken for make_url: masked textually
    masked = mask_url("postgresql://bob@db:notaport/x?password=hunter2&sslmode=require")
    assert "hunter2" not in masked and "sslmode=require" in masked
    # passfile names a file, not a secret; a URL with nothing to hide keeps its spelling
    url = "postgresql://bob@db/x?passfile=/etc/pg/pass"
    assert mask_url(url) == url


def test_errors_never_echo_a_password_query_parameter() -> None:
    from sqlalchemy.engine import make_url

    from storage.transactions import db_reason

    url = make_url("postgresql://bob@db/x?password=hunter2")
    assert db_reason(RuntimeError("auth failed for password hunter2"), url) == (
        "auth failed for password ***"
    )
    with pytest.raises(StorageError) as info:
        storage.open_database("postgresql://postgres@127.0.0.1:1/test?password=hunter2")
    assert "hunter2" not in str(info.value)
    assert "cannot connect to postgresql://postgres@127.0.0.1:1/test?password=***" in str(
        info.value
    )
    with pytest.raises(StorageError) as info:
        storage.open_database("postgresql://postgres@127.0.0.1:notaport/test?password=hunter2")
    assert "hunter2" not in str(info.value) and "malformed database URL" in str(info.value)
