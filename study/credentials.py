"""Where a command's database URL comes from, so that a password never sits on a command line.

A command line is public on a shared machine: `ps` shows it to every user, a shell
history keeps it, and `ray job submit` stores a job's entrypoint where the Ray
dashboard lists it. So a password is accepted from three places only:

1. `$INSGD_STORAGE` (a whole URL in the environment, which `ps` does not show);
2. a file named by `$INSGD_STORAGE_FILE` holding the URL (a Kubernetes or Docker
   secret mount, a `chmod 600` file on the Ray head): the environment then holds
   only a path, so the processes the driver starts never see the secret;
3. libpq's own sources, for a URL that names no password: `PGPASSWORD`,
   `PGPASSFILE` or `~/.pgpass` (psycopg reads them itself).

`--storage` still names the database (`postgresql://writer@db:5432/insgd`), but a
`--storage` URL that carries a password (`user:PASSWORD@`, or a query parameter such as
`?password=` or `?sslpassword=`; `?passfile=` names a file and is fine) is refused
before anything runs or is written. A URL from the environment or a file is used as it
is, and only ever printed masked (`storage.urls.mask_url`). Precedence is `--storage` >
`$INSGD_STORAGE` > `$INSGD_STORAGE_FILE` > `sqlite:///studies.db`; setting both
variables is refused as ambiguous (the rule of the official PostgreSQL image's
`POSTGRES_PASSWORD` / `POSTGRES_PASSWORD_FILE`).

Every command that opens the results database (`launch`, `query`, `report`,
`dashboard`, `db upgrade`) calls `resolve_storage_url(args.storage)` instead of
`storage.resolve_url`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.urls import DEFAULT_URL, url_secrets
from storage.urls import ENV_VAR as ENV_URL
from study.errors import UsageError

ENV_URL_FILE = "INSGD_STORAGE_FILE"

PASSWORD_ON_COMMAND_LINE = (
    "--storage must not contain a password (user:PASSWORD@ or ?password=): a command line "
    f"is visible in `ps` and in Ray's job list; name the database in --storage and put the "
    f"password in PGPASSWORD or ~/.pgpass, or give the whole URL in ${ENV_URL} or in a "
    f"file named by ${ENV_URL_FILE}"
)


def resolve_storage_url(
    flag: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    from_command_line: bool = True,
) -> str:
    """The database URL a command uses; raise UsageError for a password on the command line.

    `flag` is the `--storage` value, or `None`. Pass `from_command_line=False` when it came
    from a file instead (a study's TOML `storage = ...`), which may hold a password like
    any other file. `environ` defaults to `os.environ` (tests pass their own). The URL is
    not validated beyond the password check: `storage` owns URL syntax and its messages.
    """
    env = os.environ if environ is None else environ
    if flag is not None and flag.strip():
        flag = flag.strip()
        if from_command_line and url_has_password(flag):
            raise UsageError(PASSWORD_ON_COMMAND_LINE)
        return _not_in_memory(flag, "--storage")
    url = env.get(ENV_URL, "").strip()
    path = env.get(ENV_URL_FILE, "").strip()
    if url and path:
        raise UsageError(f"set only one of ${ENV_URL} and ${ENV_URL_FILE}, not both")
    if url:
        return _not_in_memory(url, f"${ENV_URL}")
    if path:
        return _not_in_memory(read_url_file(path), f"${ENV_URL_FILE}")
    return DEFAULT_URL


def _not_in_memory(url: str, where: str) -> str:
    """Refuse an in-memory SQLite database (`sqlite://`, `sqlite:///:memory:`): every
    connection (the results tables, Optuna's, the next command) would see its own empty
    database, and the results would vanish when the command ends."""
    from storage.urls import sqlite_path

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - malformed: `storage` reports it with its own words
        return url
    if parsed.get_backend_name() == "sqlite" and not parsed.host and sqlite_path(parsed) is None:
        raise UsageError(
            f"{where} names an in-memory SQLite database, which keeps nothing after the "
            f"command ends and which Optuna and Ray cannot share; name a file, e.g. "
            f"sqlite:///studies.db"
        )
    return url


def read_url_file(path: str | os.PathLike[str]) -> str:
    """The URL stored in `path`: its first line that is neither blank nor a `#` comment.

    Errors name the file, never its contents.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"${ENV_URL_FILE} names {str(file)!r}, which does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"${ENV_URL_FILE} names {str(file)!r}, which is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise UsageError(f"cannot read ${ENV_URL_FILE} file {str(file)!r}: {reason}") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    raise UsageError(f"${ENV_URL_FILE} file {str(file)!r} holds no database URL")


def url_has_password(url: str) -> bool:
    """True when `url` carries a password: in its user info (an empty one counts:
    `user:@host`) or as a secret query parameter (`?password=`, `?sslpassword=`).

    A URL too broken for SQLAlchemy to parse is checked textually, so a malformed URL
    with a password is refused here rather than echoed by a later error.
    """
    return bool(url_secrets(url))
