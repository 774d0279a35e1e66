"""Where the database URL comes from: env or file, never a password on the command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from study.credentials import (
    DEFAULT_URL,
    ENV_URL,
    ENV_URL_FILE,
    read_url_file,
    resolve_storage_url,
    url_has_password,
)
from study.errors import UsageError

SECRET = "s3cr3t-Pa55"
PG = "postgresql://writer@db.example:5432/insgd"


def test_precedence_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    url_file = tmp_path / "db_url"
    url_file.write_text(f"postgresql://writer:{SECRET}@db/insgd\n")
    assert resolve_storage_url(None, {}) == DEFAULT_URL
    assert resolve_storage_url(None, {ENV_URL_FILE: str(url_file)}) == (
        f"postgresql://writer:{SECRET}@db/insgd"
    )
    assert resolve_storage_url(None, {ENV_URL: "sqlite:///env.db"}) == "sqlite:///env.db"
    assert resolve_storage_url(PG, {ENV_URL: "sqlite:///env.db"}) == PG
    # blank values count as unset, as in storage.resolve_url
    assert resolve_storage_url("  ", {ENV_URL: "  ", ENV_URL_FILE: ""}) == DEFAULT_URL


def test_default_follows_storage_module() -> None:
    from storage.urls import DEFAULT_URL as STORAGE_DEFAULT
    from storage.urls import ENV_VAR

    assert DEFAULT_URL == STORAGE_DEFAULT and ENV_URL == ENV_VAR


@pytest.mark.parametrize(
    "flag",
    [
        f"postgresql://writer:{SECRET}@db:5432/insgd",
        f"postgresql+psycopg://writer:{SECRET}@db/insgd",
        "postgresql://writer:@db/insgd",  # an empty password is still a password field
        f"postgresql://writer:{SECRET}@db:notaport/insgd",  # too broken for make_url
    ],
)
def test_password_in_storage_flag_is_refused_without_echoing_it(flag: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve_storage_url(flag, {})
    message = str(info.value)
    assert SECRET not in message and "--storage must not contain a password" in message
    assert ENV_URL in message and ENV_URL_FILE in message and "PGPASSWORD" in message


def test_password_from_a_config_file_is_allowed() -> None:
    url = f"postgresql://writer:{SECRET}@db/insgd"
    assert resolve_storage_url(url, {}, from_command_line=False) == url


@pytest.mark.parametrize(
    "url",
    [
        PG,
        "sqlite:///studies.db",
        "sqlite:////abs/p.db",
        "postgresql://db/insgd",
        "postgresql://u@db/x?sslmode=require",
    ],
)
def test_urls_without_password_pass(url: str) -> None:
    assert not url_has_password(url)
    assert resolve_storage_url(url, {}) == url


def test_both_variables_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "u").write_text(PG)
    with pytest.raises(UsageError, match="only one of"):
        resolve_storage_url(None, {ENV_URL: PG, ENV_URL_FILE: str(tmp_path / "u")})


def test_url_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "db_url"
    path.write_text(f"# written by deploy/make-secrets.sh\n\n  {PG}  \nsqlite:///second.db\n")
    assert read_url_file(path) == PG
    path.write_text(PG)  # no trailing newline, as Kubernetes Secrets often are
    assert read_url_file(path) == PG


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n", "dir"])
def test_bad_url_file_is_one_line_naming_the_file_not_its_content(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "db_url"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as info:
        resolve_storage_url(None, {ENV_URL_FILE: str(path)})
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unreadable_url_file(tmp_path: Path) -> None:
    path = tmp_path / "db_url"
    path.write_text(f"postgresql://w:{SECRET}@db/x")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: emulate with a non-UTF-8 file
        path.chmod(0o600)
        path.write_bytes(b"\xff\xfe" + SECRET.encode())
    with pytest.raises(UsageError) as info:
        read_url_file(path)
    assert "cannot read" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(
    "command", ["query", "report --study s", "dashboard", "launch", "db upgrade"]
)
def test_cli_refuses_password_in_storage_with_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """Every command that opens the database: one line on stderr, exit 2, nothing written,
    the secret not echoed (the server named does not exist: nothing may try to reach it)."""
    from study.cli import main

    for name in (ENV_URL, ENV_URL_FILE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    code = main([*command.split(), "--storage", f"postgresql://w:{SECRET}@127.0.0.1:1/x"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and "must not contain a password" in err, err
    assert SECRET not in out + err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag",
    [
        f"postgresql://writer@db:5432/insgd?password={SECRET}",
        f"postgresql://writer@db/insgd?sslmode=require&password={SECRET}",
        f"postgresql://writer@db/insgd?PASSWORD={SECRET}",
        f"postgresql://writer@db/insgd?sslpassword={SECRET}",  # the client key's passphrase
        f"postgresql://writer@db:notaport/insgd?password={SECRET}",  # too broken for make_url
    ],
)
def test_password_query_parameter_in_storage_flag_is_refused(flag: str) -> None:
    assert url_has_password(flag)
    with pytest.raises(UsageError) as info:
        resolve_storage_url(flag, {})
    assert SECRET not in str(info.value)
    assert "--storage must not contain a password" in str(info.value)


def test_passfile_query_parameter_is_not_a_password() -> None:
    url = "postgresql://writer@db/insgd?passfile=/run/secrets/pgpass&sslmode=require"
    assert not url_has_password(url)
    assert resolve_storage_url(url, {}) == url


@pytest.mark.parametrize("command", ["db current", "db upgrade", "query", "launch"])
def test_cli_refuses_password_query_parameter_with_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    from study.cli import main

    for name in (ENV_URL, ENV_URL_FILE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    # a reachable server with trust auth: without the check this would connect and print it
    url = f"postgresql://postgres@127.0.0.1:5432/test?password={SECRET}"
    code = main([*command.split(), "--storage", url])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and "must not contain a password" in err, err
    assert SECRET not in out + err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"])
@pytest.mark.parametrize("source", ["flag", "env"])
def test_in_memory_sqlite_is_refused_with_a_reason(url: str, source: str) -> None:
    flag, env = (url, {}) if source == "flag" else (None, {ENV_URL: url})
    with pytest.raises(UsageError) as info:
        resolve_storage_url(flag, env)
    assert "in-memory SQLite database" in str(info.value)
    assert "sqlite:///studies.db" in str(info.value)
