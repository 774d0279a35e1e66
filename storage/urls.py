"""Database URLs: where they come from, how they are checked, and how they are shown.

One place decides which URL a command uses (`--storage` > `$INSGD_STORAGE` >
`sqlite:///studies.db`), which schemes are supported, and how a URL is printed:
every message and log line goes through `mask_url`, so a password typed into
`--storage` never reaches a terminal, a log file or a bug report.
"""

from __future__ import annotations

import os
import re

from sqlalchemy.engine import URL, make_url

from storage.errors import StorageError

DEFAULT_URL = "sqlite:///studies.db"
ENV_VAR = "INSGD_STORAGE"

#: Accepted schemes and the SQLAlchemy driver each one is run with. Plain `postgresql://`
#: would mean psycopg2 to SQLAlchemy; we ship psycopg 3, so it is mapped explicitly.
SCHEMES: dict[str, str] = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}

_USAGE = "use sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
# user:password@ inside scheme://...; used when a URL is too broken for make_url.
_PASSWORD_RE = re.compile(r"(?P<head>[\w+.-]*://[^:/@\s]*):(?P<pw>[^@\s]*)@")


def resolve_url(flag: str | None) -> str:
    """The URL a command should use: the `--storage` flag, else `$INSGD_STORAGE`, else the
    default SQLite file in the working directory. Not validated here (see `normalize_url`)."""
    if flag is not None and flag.strip():
        return flag.strip()
    env = os.environ.get(ENV_VAR, "").strip()
    return env or DEFAULT_URL


def mask_url(url: str | URL) -> str:
    """`url` with its password replaced by `***`, safe to print; works on malformed URLs too."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is masked textually below
        return _PASSWORD_RE.sub(lambda m: f"{m['head']}:***@", url)
    if parsed.password is None:
        # make_url accepted it; re-rendering would change the user's spelling for nothing.
        return url
    return parsed.render_as_string(hide_password=True)


def parse_url(url: str) -> URL:
    """Validate `url` and return it with an explicit driver (psycopg 3 for PostgreSQL).

    Raises StorageError (one line, password masked) for a malformed URL or an
    unsupported scheme, so a typo never becomes a SQLAlchemy traceback.
    """
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"empty database URL; {_USAGE}")
    url = url.strip()
    if "://" not in url:
        hint = f" (did you mean sqlite:///{url}?)" if not url.startswith(("-", "/")) else ""
        raise StorageError(f"malformed database URL {mask_url(url)!r}{hint}; {_USAGE}")
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, or ValueError for a bad port
        raise StorageError(f"malformed database URL {mask_url(url)!r}; {_USAGE}") from None
    scheme = parsed.drivername.lower()
    if scheme not in SCHEMES:
        raise StorageError(
            f"unsupported database URL scheme {scheme!r} in {mask_url(parsed)!r}; {_USAGE}"
        )
    parsed = parsed.set(drivername=SCHEMES[scheme])
    if parsed.drivername == "sqlite":
        if parsed.username or parsed.password or parsed.host or parsed.port:
            raise StorageError(
                f"malformed SQLite URL {mask_url(parsed)!r}: a SQLite URL has no host; "
                "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
    else:
        if not parsed.host:
            raise StorageError(f"PostgreSQL URL {mask_url(parsed)!r} names no host; {_USAGE}")
        if not parsed.database:
            raise StorageError(f"PostgreSQL URL {mask_url(parsed)!r} names no database; {_USAGE}")
    return parsed


def normalize_url(url: str) -> str:
    """The validated URL as a string with its driver spelled out, password included.

    Pass this (never the raw flag) to `optuna.storages.RDBStorage` so that Optuna and
    our tables use the same driver on the same database.
    """
    return parse_url(url).render_as_string(hide_password=False)


def is_sqlite(url: str | URL) -> bool:
    return (url if isinstance(url, URL) else make_url(url)).get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> str | None:
    """The file a SQLite URL points at, or None for an in-memory database."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):
        return database[len("file:") :].split("?", 1)[0]
    return database
