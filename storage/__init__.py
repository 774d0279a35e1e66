"""The results database: SQLAlchemy 2 models, engines, migrations, a write and a query API.

Knows nothing of Ray, torch or Optuna. The public names below are loaded
lazily (PEP 562), so `import storage.errors` — which the command line does for
every subcommand — does not pay for importing SQLAlchemy and alembic.

    engine = storage.open_database(storage.resolve_url(args.storage))
    writer = storage.ResultWriter(engine)
    rows = storage.queries.list_trials(engine, "my-study", where=["norm=l2", "lr>=0.01"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from storage.errors import StorageError

_EXPORTS: dict[str, str] = {
    "DEFAULT_URL": "storage.urls",
    "ENV_VAR": "storage.urls",
    "resolve_url": "storage.urls",
    "mask_url": "storage.urls",
    "normalize_url": "storage.urls",
    "open_database": "storage.engine",
    "upgrade": "storage.engine",
    "schema_status": "storage.engine",
    "dispose_engines": "storage.engine",
    "ResultWriter": "storage.writer",
    "TrialState": "storage.schema",
    "TRIAL_STATES": "storage.schema",
    "COMPLETE": "storage.schema",
    "PRUNED": "storage.schema",
    "FAIL": "storage.schema",
    "RUNNING": "storage.schema",
    "StudyRow": "storage.queries",
    "TrialRow": "storage.queries",
    "EpochRow": "storage.queries",
    "FILTER_COLUMNS": "storage.queries",
    "JSON_KEYS": "storage.queries",
}
_SUBMODULES = frozenset({"queries", "schema", "urls", "engine", "writer", "migrate"})

# Literal, so that tools see the names: keep in step with _EXPORTS and _SUBMODULES.
__all__ = [
    "COMPLETE",
    "DEFAULT_URL",
    "ENV_VAR",
    "FAIL",
    "FILTER_COLUMNS",
    "JSON_KEYS",
    "PRUNED",
    "RUNNING",
    "TRIAL_STATES",
    "EpochRow",
    "ResultWriter",
    "StorageError",
    "StudyRow",
    "TrialRow",
    "TrialState",
    "dispose_engines",
    "engine",
    "mask_url",
    "migrate",
    "normalize_url",
    "open_database",
    "queries",
    "resolve_url",
    "schema",
    "schema_status",
    "upgrade",
    "urls",
    "writer",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from storage import engine, migrate, queries, schema, urls, writer
    from storage.engine import dispose_engines, open_database, schema_status, upgrade
    from storage.queries import FILTER_COLUMNS, JSON_KEYS, EpochRow, StudyRow, TrialRow
    from storage.schema import COMPLETE, FAIL, PRUNED, RUNNING, TRIAL_STATES, TrialState
    from storage.urls import DEFAULT_URL, ENV_VAR, mask_url, normalize_url, resolve_url
    from storage.writer import ResultWriter


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"storage.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
