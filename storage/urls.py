"""Database URLs: where they come from, how they are checked, and how they are shown.

One place decides which URL a command uses (`--storage` > `$INSGD_STORAGE` >
`sqlite:///studies.db`), which schemes are supported, and how a URL is printed:
every message and log line goes through `mask_url`, so a password (in the user info,
`user:PASSWORD@`, or in a query parameter such as `?password=`) never reaches a
terminal, a log file or a bug report.
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
#: Query parameters that carry a secret (libpq's `password` and `sslpassword`, the
#: passphrase of a client key). `passfile` names a file, not a secret: it stays visible.
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
# ?password=... / &sslpassword=..., for URLs too broken for make_url.
_SECRET_QUERY_RE = re.compile(
    r"(?P<head>[?&](?:ssl)?password=)(?P<secret>[^&#\s]*)", flags=re.IGNORECASE
)


def resolve_url(flag: str | None) -> str:
    """The URL a command should use: the `--storage` flag, else `$INSGD_STORAGE`, else the
    default SQLite file in the working directory. Not validated here (see `normalize_url`)."""
    if flag is not None and flag.strip():
        return flag.strip()
    env = os.environ.get(ENV_VAR, "").strip()
    return env or DEFAULT_URL


def mask_url(url: str | URL) -> str:
    """`url` with its password and secret query parameters (`?password=`, `?sslpassword=`)
    replaced by `***`, safe to print; works on malformed URLs too."""
    if isinstance(url, URL):
        return _masked(url)
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is masked textually below
        text = _PASSWORD_RE.sub(lambda m: f"{m['head']}:***@", url)
        return _SECRET_QUERY_RE.sub(lambda m: f"{m['head']}***", text)
    if not url_secrets(parsed):
        # make_url accepted it; re-rendering would change the user's spelling for nothing.
        return url
    return _masked(parsed)


def url_secrets(url: str | URL) -> list[str]:
    """The secrets `url` carries: its password, then the values of secret query parameters.

    An empty password (`user:@host`) counts: it is a password field all the same. A URL
    too broken for SQLAlchemy is searched textually.
    """
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError / ValueError: fall back to the text
        text = str(url)
        found = [m["secret"] for m in _SECRET_QUERY_RE.finditer(text)]
        head, sep, _ = text.partition("@")
        if sep and "://" in head and ":" in head.split("://", 1)[1]:
            found.insert(0, head.split("://", 1)[1].split(":", 1)[1])
        return found
    found = [] if parsed.password is None else [str(parsed.password)]
    for key, value in parsed.query.items():
        if key.lower() in SECRET_QUERY_KEYS:
            found.extend([value] if isinstance(value, str) else list(value))
    return found


def hide_secrets(text: str, url: str | URL) -> str:
    """`text` (a driver's or Optuna's error message) with every secret of `url` as `***`."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def upgrade_command(url: str | URL) -> str:
    """The `insgd-study db upgrade` command line for `url`, quoted, for hints in messages.

    A URL with a secret came from the environment or a file (the command line refuses
    one): its masked form would be refused as `--storage`, so the hint names none.
    """
    if url_secrets(url):
        return f"`insgd-study db upgrade` (with the same ${ENV_VAR} or ${ENV_VAR}_FILE)"
    return f"`insgd-study db upgrade --storage {mask_url(url)}`"


_MASK_TOKEN = "INSGDMASKEDSECRET"  # letters only: rendering leaves it unescaped


def _masked(url: URL) -> str:
    secret_keys = [key for key in url.query if key.lower() in SECRET_QUERY_KEYS]
    if secret_keys:
        query = dict(url.query)
        for key in secret_keys:
            value = query[key]
            query[key] = _MASK_TOKEN if isinstance(value, str) else (_MASK_TOKEN,) * len(value)
        url = url.set(query=query)
    return url.render_as_string(hide_password=True).replace(_MASK_TOKEN, "***")


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
