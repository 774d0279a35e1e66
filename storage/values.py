"""Turning what callers hand the writer into column values, or a clear StorageError.

Callers pass plain dicts (a TrainConfig's `to_dict()`, a TrialResult's fields,
an EpochMetrics' `to_dict()`, numpy scalars from a Ray result ...). Checking and
coercing them here, before any transaction starts, means a bad value never
half-writes a trial, and SQLite and PostgreSQL store exactly the same thing
(SQLite would silently turn NaN into NULL; PostgreSQL would keep it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Double, Integer, String, Text

from storage.errors import StorageError
from storage.schema import (
    EPOCH_METRICS,
    NORM_VALUES,
    TRIAL_FIELDS,
    TRIAL_STATES,
    Epoch,
    Trial,
    UTCDateTime,
)

#: Names callers may use for a trial column (TrainConfig says `epochs` for the plan).
TRIAL_ALIASES = {"epochs": "epochs_planned", "val_accuracy": "final_val_accuracy"}


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data: tuples to lists, NaN/inf to None, numpy scalars unwrapped,
    anything else (paths, enums) as its string. Both backends then store the same document."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def to_utc(value: Any, name: str) -> datetime | None:
    """A timezone-aware UTC datetime from a datetime, a UNIX timestamp or an ISO string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise StorageError(f"{name} must be a finite timestamp, got {value!r}")
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise StorageError(f"{name} must be an ISO 8601 time, got {value!r}") from None
    else:
        raise StorageError(f"{name} must be a datetime or a timestamp, got {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def coerce(column: Any, value: Any, name: str) -> Any:
    """`value` converted to the Python type of `column`, or StorageError naming `name`."""
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, Boolean):
        if isinstance(value, bool) or (_is_number(value) and value in (0, 1)):
            return bool(value)
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        raise StorageError(f"{name} must be true or false, got {value!r}")
    if isinstance(kind, Double):
        if not _is_number(value):
            raise StorageError(f"{name} must be a number, got {value!r}")
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(kind, Integer):
        if _is_number(value) and float(value).is_integer():
            return int(value)
        raise StorageError(f"{name} must be an integer, got {value!r}")
    if isinstance(kind, UTCDateTime):
        return to_utc(value, name)
    if isinstance(kind, String | Text):
        if not isinstance(value, str):
            value = str(value)
        length = getattr(kind, "length", None)
        if length is not None and len(value) > length:
            raise StorageError(f"{name} is longer than {length} characters: {value[:40]!r}...")
        return value
    if isinstance(kind, JSON):
        return jsonable(value)
    raise AssertionError(f"no coercion for column type {kind!r}")  # pragma: no cover


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    # numpy and torch scalars: int()/float() work and they are not strings
    return hasattr(value, "__float__") and not isinstance(value, str | bytes)


def trial_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for a trial row from `fields`.

    Keys that are trial columns (or an alias in TRIAL_ALIASES) set those columns;
    a nested `config` mapping (e.g. TrainConfig.to_dict()) supplies defaults for
    them; every other key, and the whole `config`, lands in the `params` JSON
    column, so no option is lost. A list under `epochs` is left to the caller
    (finish_trial treats it as the epoch rows).
    """
    if not isinstance(fields, Mapping):
        raise StorageError(f"trial fields must be a mapping, got {type(fields).__name__}")
    params: dict[str, Any] = {}
    source: dict[str, Any] = {}
    config = fields.get("config")
    if isinstance(config, Mapping):
        params.update(config)
        source.update(config)
    elif config is not None:
        raise StorageError(f"config must be a mapping, got {type(config).__name__}")
    source.update({k: v for k, v in fields.items() if k != "config"})

    values: dict[str, Any] = {}
    for key, value in source.items():
        if key == "params":
            if not isinstance(value, Mapping):
                raise StorageError(f"params must be a mapping, got {type(value).__name__}")
            params.update(value)
            continue
        if key == "epochs" and isinstance(value, list | tuple):
            continue
        column = TRIAL_ALIASES.get(key, key)
        if column in TRIAL_FIELDS:
            values[column] = coerce(Trial.__table__.c[column], value, key)
        else:
            params[key] = value

    state = values.get("state")
    if "state" in values:
        state = str(state).upper() if state is not None else None
        if state not in TRIAL_STATES:
            raise StorageError(f"state must be one of {', '.join(TRIAL_STATES)}; got {state!r}")
        values["state"] = state
    if values.get("optimizer") is not None:
        values["optimizer"] = values["optimizer"].lower()
        if values["optimizer"] == "sgd":
            values["norm"] = "none"  # plain SGD has no input norm, whatever the config says
    if values.get("norm") is not None:
        values["norm"] = values["norm"].lower()
        if values["norm"] not in NORM_VALUES:
            raise StorageError(
                f"norm must be one of {', '.join(NORM_VALUES)}; got {values['norm']!r}"
            )
    for flag in ("diverged", "stopped_early", "epochs_completed"):
        if flag in values and values[flag] is None:
            del values[flag]  # NOT NULL columns: None means "not known", keep the default
    if params:
        values["params"] = jsonable(params)
    return values


def epoch_values(epoch: Any, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for one epoch row; keys that are not EpochMetrics fields are ignored
    (a Ray result carries many), but `epoch` inside `metrics` must agree with `epoch`."""
    if not isinstance(metrics, Mapping):
        raise StorageError(f"epoch metrics must be a mapping, got {type(metrics).__name__}")
    number = coerce(Epoch.__table__.c.epoch, epoch, "epoch")
    if number is None or number < 0:
        raise StorageError(f"epoch must be an integer >= 0, got {epoch!r}")
    if "epoch" in metrics and metrics["epoch"] is not None and metrics["epoch"] != number:
        raise StorageError(f"epoch {number} was given metrics of epoch {metrics['epoch']!r}")
    row: dict[str, Any] = {"epoch": number}
    for name in EPOCH_METRICS:
        row[name] = coerce(Epoch.__table__.c[name], metrics.get(name), name)
    row["diverged"] = bool(row["diverged"])
    return row
