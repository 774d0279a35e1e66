"""The query API: typed, read-only views of studies, trials and epochs.

Rows come back as frozen dataclasses built straight from Core result tuples
(no ORM identity map), which is what lets a 10,000-trial study load in tens of
milliseconds. Filters name columns from FILTER_COLUMNS only and their values
are always bound parameters, so nothing a user types is ever pasted into SQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, String, Text, cast, or_, select, type_coerce
from sqlalchemy.engine import Connection, Engine

from storage.errors import StorageError
from storage.schema import NORM_VALUES, TRIAL_STATES, Epoch, Study, Trial
from storage.urls import mask_url

Row = TypeVar("Row")

# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StudyRow:
    id: int
    name: str
    created_at: datetime
    config: dict[str, Any] = field(hash=False)
    code_version: str


@dataclass(frozen=True)
class TrialRow:
    """One trial with its study's name; accuracies are fractions in [0, 1]."""

    study: str
    trial_number: int
    state: str
    optimizer: str | None
    norm: str | None
    normalizer: str | None
    granularity: str | None
    lr: float | None
    eps: float | None
    beta: float | None
    momentum: float | None
    weight_decay: float | None
    batch_size: int | None
    seed: int | None
    model: str | None
    dataset: str | None
    epochs_planned: int | None
    epochs_completed: int
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    final_train_loss: float | None
    diverged: bool
    stopped_early: bool
    wall_seconds: float | None
    node_id: str | None
    hostname: str | None
    device_name: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    #: The study variant ("sgd", "insgd-l2-frozen", ...; revision 0003).
    variant: str | None = None
    #: `params` as stored (JSON text); read `params` instead.
    params_json: str | None = field(default=None, repr=False, compare=False)

    @cached_property
    def params(self) -> dict[str, Any] | None:
        """Every training option of the trial (schedule, nesterov, batchnorm, ...).

        Decoded on first use: decoding 10,000 of them up front would double the
        cost of reading a study that most callers read for its columns only.
        """
        return json.loads(self.params_json) if self.params_json else None

    def to_json_dict(self) -> dict[str, Any]:
        """The documented JSON contract of `insgd-study query --format json` (JSON_KEYS).

        `val_accuracy` is the *final* validation accuracy; times are ISO 8601 UTC;
        a non-finite number (a diverged loss) is null, so the output is strict JSON.
        """
        values = self.__dict__
        out = {key: values[attribute] for key, attribute in _JSON_ATTRIBUTES}
        for key in _JSON_FLOATS:
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = None
        for key in ("started_at", "finished_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


@dataclass(frozen=True)
class EpochRow:
    study: str
    trial_number: int
    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float | None
    epoch_seconds: float | None
    images_per_second: float | None
    diverged: bool
    recorded_at: datetime | None


#: Keys of TrialRow.to_json_dict(), in order: the contract scripts rely on.
JSON_KEYS: tuple[str, ...] = (
    "study",
    "trial_number",
    "state",
    "optimizer",
    "norm",
    "normalizer",
    "granularity",
    "lr",
    "eps",
    "beta",
    "momentum",
    "weight_decay",
    "batch_size",
    "seed",
    "model",
    "dataset",
    "epochs_planned",
    "epochs_completed",
    "val_accuracy",
    "best_val_accuracy",
    "final_train_loss",
    "diverged",
    "stopped_early",
    "wall_seconds",
    "node_id",
    "hostname",
    "device_name",
    "started_at",
    "finished_at",
    "error",
    "variant",
)
_JSON_ATTRIBUTES = tuple(
    (key, "final_val_accuracy" if key == "val_accuracy" else key) for key in JSON_KEYS
)
_JSON_FLOATS = tuple(
    key
    for key, attribute in _JSON_ATTRIBUTES
    if TrialRow.__dataclass_fields__[attribute].type in ("float | None", "float")
)

_TRIAL_NAMES = tuple(f.name for f in fields(TrialRow))
_EPOCH_NAMES = tuple(f.name for f in fields(EpochRow))
_DATETIMES = frozenset({"started_at", "finished_at", "recorded_at"})


def _selected(model: Any, names: Sequence[str], dialect: str) -> list[Any]:
    """The columns of `names` (study name first). On SQLite the timestamps come back as
    their stored text, which `_materialize` parses several times faster than SQLAlchemy's
    generic SQLite DATETIME processor (a third of a 10,000-trial read otherwise); `params`
    comes back as JSON text on both backends, decoded only when a caller reads it."""
    columns: list[Any] = [Study.name]
    for name in names[1:]:
        if name == "params_json":
            columns.append(cast(Trial.params, Text).label(name))
            continue
        column = getattr(Trial, name) if name == "trial_number" else getattr(model, name)
        if dialect == "sqlite" and name in _DATETIMES:
            column = type_coerce(column, String).label(name)
        columns.append(column)
    return columns


def _parse_utc(text: str | datetime) -> datetime:
    moment = datetime.fromisoformat(text) if isinstance(text, str) else text
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _materialize(cls: type[Row], names: Sequence[str], rows: Sequence[Any]) -> list[Row]:
    """Frozen dataclass instances from result tuples, without running their __init__.

    A frozen dataclass's __init__ assigns each of its ~30 fields through
    object.__setattr__; setting the instance dict once is 3x faster, which is most
    of what reading a 10,000-trial study costs. The instances are ordinary (equality,
    hash, repr and immutability all hold).
    """
    new, set_attr = object.__new__, object.__setattr__
    stamps = [name for name in names if name in _DATETIMES]
    out: list[Row] = []
    append = out.append
    for row in rows:
        values = dict(zip(names, row, strict=True))
        for name in stamps:
            value = values[name]
            if value is not None:
                values[name] = _parse_utc(value)
        obj = new(cls)
        set_attr(obj, "__dict__", values)
        append(obj)
    return out


# -- filters -------------------------------------------------------------------------------

#: Columns `--where` / `where=` / `order_by=` accept, and how a value for each is read:
#: number (float), integer, boolean (true/false/1/0), text, state (TrialState), norm.
FILTER_COLUMNS: dict[str, str] = {
    "study": "text",
    "trial_number": "integer",
    "state": "state",
    "optimizer": "text",
    "norm": "norm",
    "normalizer": "text",
    "granularity": "text",
    "lr": "number",
    "eps": "number",
    "beta": "number",
    "momentum": "number",
    "weight_decay": "number",
    "batch_size": "integer",
    "seed": "integer",
    "model": "text",
    "dataset": "text",
    "epochs_planned": "integer",
    "epochs_completed": "integer",
    "val_accuracy": "number",
    "best_val_accuracy": "number",
    "final_train_loss": "number",
    "diverged": "boolean",
    "stopped_early": "boolean",
    "wall_seconds": "number",
    "node_id": "text",
    "hostname": "text",
    "device_name": "text",
    "variant": "text",
}
#: Other spellings accepted for a filter column.
FILTER_ALIASES = {"final_val_accuracy": "val_accuracy", "trial": "trial_number"}
OPERATORS: tuple[str, ...] = ("=", "!=", ">=", "<=", ">", "<")
_RANGE_KINDS = frozenset({"number", "integer"})
_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|=|>|<)(.*)$", re.DOTALL)
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


def _column(name: str) -> Any:
    if name == "study":
        return Study.name
    if name == "val_accuracy":
        return Trial.final_val_accuracy
    return getattr(Trial, name)


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition `column op value`, its value already of the column's type."""

    column: str
    op: str
    value: Any

    def clause(self) -> ColumnElement[bool]:
        col = _column(self.column)
        if self.op == "=":
            return col == self.value
        if self.op == "!=":
            return or_(col != self.value, col.is_(None))
        if self.op == ">=":
            return col >= self.value
        if self.op == "<=":
            return col <= self.value
        if self.op == ">":
            return col > self.value
        return col < self.value


def filter_column(name: str) -> str:
    """The canonical filter column for `name`, or StorageError listing the choices."""
    key = FILTER_ALIASES.get(name, name)
    if key not in FILTER_COLUMNS:
        raise StorageError(f"unknown column {name!r}; choose from: {', '.join(FILTER_COLUMNS)}")
    return key


def make_filter(column: str, op: str, value: Any) -> Filter:
    """Validate a condition; a string value is parsed by the column's type."""
    key = filter_column(column)
    op = "=" if op == "==" else op
    if op not in OPERATORS:
        raise StorageError(f"unknown operator {op!r}; use one of {' '.join(OPERATORS)}")
    kind = FILTER_COLUMNS[key]
    if op not in ("=", "!=") and kind not in _RANGE_KINDS:
        raise StorageError(f"{key}{op}... needs a numeric column; {key} is {kind}")
    return Filter(key, op, _typed(key, kind, value))


def parse_filter(text: str) -> Filter:
    """`KEY=VALUE`, `KEY!=VALUE`, `KEY>=VALUE`, `KEY<=VALUE`, `KEY>VALUE` or `KEY<VALUE`."""
    match = _FILTER_RE.match(text)
    if not match:
        raise StorageError(
            f"bad filter {text!r}: expected KEY=VALUE (or KEY>=VALUE, KEY<=VALUE, KEY!=VALUE)"
        )
    column, op, value = match.groups()
    return make_filter(column, op, value.strip())


def parse_filters(texts: Iterable[str]) -> list[Filter]:
    return [parse_filter(t) for t in texts]


def _typed(key: str, kind: str, value: Any) -> Any:
    if kind == "number":
        return _number(key, value, float)
    if kind == "integer":
        return _number(key, value, int)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise StorageError(f"{key} takes true/false/1/0, got {value!r}")
    if not isinstance(value, str):
        raise StorageError(f"{key} takes text, got {value!r}")
    if kind == "state":
        state = value.strip().upper()
        if state not in TRIAL_STATES:
            raise StorageError(f"state takes one of {', '.join(TRIAL_STATES)}; got {value!r}")
        return state
    if kind == "norm":
        norm = value.strip().lower()
        if norm not in NORM_VALUES:
            raise StorageError(f"norm takes one of {', '.join(NORM_VALUES)}; got {value!r}")
        return norm
    return value


#: The range of the integer columns: INTEGER is 32-bit on PostgreSQL, so a value outside
#: it matches nothing, and binding it would be a driver error (or an OverflowError on SQLite).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _number(key: str, value: Any, kind: type) -> Any:
    noun = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise StorageError(f"{key} takes {noun}, got {value!r}")
    exact = _exact_int(value) if kind is int else None
    if exact is None:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise StorageError(f"{key} takes {noun}, got {value!r}") from None
        if not math.isfinite(number) or (kind is int and not number.is_integer()):
            raise StorageError(f"{key} takes {noun}, got {value!r}")
        if kind is not int:
            return number
        exact = int(number)  # "1e3", "5.0"
    if not INT_MIN <= exact <= INT_MAX:
        raise StorageError(f"{key} takes an integer from {INT_MIN} to {INT_MAX}, got {value!r}")
    return exact


def _exact_int(value: Any) -> int | None:
    """An int or a string of digits, exactly (through a float, 2**63 - 1 would round up)."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _as_filters(where: Any) -> list[Filter]:
    if where is None:
        return []
    if isinstance(where, Mapping):
        out: list[Filter] = []
        for column, value in where.items():
            values = value if isinstance(value, list | tuple | set | frozenset) else [value]
            out.extend(make_filter(column, "=", v) for v in values)
        return out
    if isinstance(where, str | Filter):
        where = [where]
    out = []
    for item in where:
        if isinstance(item, Filter):
            out.append(make_filter(item.column, item.op, item.value))
        elif isinstance(item, str):
            out.append(parse_filter(item))
        elif isinstance(item, tuple) and len(item) == 3:
            out.append(make_filter(*item))
        else:
            raise StorageError(f"bad filter {item!r}: expected 'KEY=VALUE' or (column, op, value)")
    return out


def _where_clauses(filters: Sequence[Filter]) -> list[ColumnElement[bool]]:
    """Equalities on one column are OR-ed (IN), everything else is AND-ed."""
    equal: dict[str, list[Any]] = {}
    clauses: list[ColumnElement[bool]] = []
    for f in filters:
        if f.op == "=":
            equal.setdefault(f.column, []).append(f.value)
        else:
            clauses.append(f.clause())
    for column, values in equal.items():
        col = _column(column)
        clauses.append(col == values[0] if len(values) == 1 else col.in_(values))
    return clauses


def parse_order(item: str) -> tuple[str, bool]:
    """`lr`, `lr:asc`, `lr:desc` or `-lr` -> (filter column, descending)."""
    name = item.strip()
    descending = name.startswith("-")
    name = name.lstrip("-").strip()
    if ":" in name:
        name, _, direction = name.partition(":")
        direction = direction.strip().lower()
        if direction not in ("asc", "desc"):
            raise StorageError(f"bad sort order {item!r}: use COLUMN, COLUMN:asc or COLUMN:desc")
        descending = direction == "desc"
    return filter_column(name.strip()), descending


def _order_clauses(order_by: str | Sequence[str] | None) -> list[Any]:
    items = [order_by] if isinstance(order_by, str) else list(order_by or [])
    out: list[Any] = []
    for item in items:
        column, descending = parse_order(item)
        col = _column(column)
        out.append((col.desc() if descending else col.asc()).nulls_last())
    return [*out, Study.name.asc(), Trial.trial_number.asc()]


# -- queries -------------------------------------------------------------------------------


def list_studies(engine: Engine) -> list[StudyRow]:
    with engine.connect() as conn:
        rows = conn.execute(_study_select().order_by(Study.name)).all()
    return [StudyRow(*row) for row in rows]


def get_study(engine: Engine, name: str) -> StudyRow | None:
    with engine.connect() as conn:
        row = conn.execute(_study_select().where(Study.name == name)).first()
    return StudyRow(*row) if row is not None else None


def list_trials(
    engine: Engine,
    study: str | None = None,
    where: Mapping[str, Any] | Iterable[Filter | str | tuple[str, str, Any]] | str | None = None,
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
) -> list[TrialRow]:
    """Trials, optionally of one study, matching every filter, in the given order.

    `where`: a mapping {column: value or [values]} (equality; several values = any of
    them), or `KEY<op>VALUE` strings / Filter / (column, op, value) items. `order_by`:
    filter column names, `name:desc` or `-name` for descending; ties by study then
    trial number; missing values sort last.
    An unknown study or column, or a malformed value, is a StorageError.
    """
    filters = _as_filters(where)
    order = _order_clauses(order_by)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StorageError(f"limit must be an integer >= 0, got {limit!r}")
    with engine.connect() as conn:
        columns = _selected(Trial, _TRIAL_NAMES, conn.dialect.name)
        stmt: Select[Any] = select(*columns).join(Study, Trial.study_id == Study.id)
        if study is not None:
            stmt = stmt.where(Trial.study_id == _study_id(conn, engine, study))
        stmt = stmt.where(*_where_clauses(filters)).order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = conn.execute(stmt).all()
    return _materialize(TrialRow, _TRIAL_NAMES, rows)


def trial_epochs(engine: Engine, study: str, trial_number: int) -> list[EpochRow]:
    """One trial's per-epoch metrics in epoch order; unknown study or trial: StorageError."""
    with engine.connect() as conn:
        study_id = _study_id(conn, engine, study)
        trial_id = conn.scalar(
            select(Trial.id).where(Trial.study_id == study_id, Trial.trial_number == trial_number)
        )
        if trial_id is None:
            raise StorageError(f"study {study!r} has no trial number {trial_number!r}")
        rows = conn.execute(_epoch_select(conn).where(Epoch.trial_id == trial_id)).all()
    return _materialize(EpochRow, _EPOCH_NAMES, rows)


def study_epochs(engine: Engine, study: str) -> list[EpochRow]:
    """Every epoch row of a study, by trial number then epoch: all learning curves at once."""
    with engine.connect() as conn:
        study_id = _study_id(conn, engine, study)
        rows = conn.execute(_epoch_select(conn).where(Trial.study_id == study_id)).all()
    return _materialize(EpochRow, _EPOCH_NAMES, rows)


def _study_select() -> Select[Any]:
    return select(Study.id, Study.name, Study.created_at, Study.config, Study.code_version)


def _epoch_select(conn: Connection) -> Select[Any]:
    return (
        select(*_selected(Epoch, _EPOCH_NAMES, conn.dialect.name))
        .join(Trial, Epoch.trial_id == Trial.id)
        .join(Study, Trial.study_id == Study.id)
        .order_by(Trial.trial_number, Epoch.epoch)
    )


def _study_id(conn: Connection, engine: Engine, name: str) -> int:
    study_id = conn.scalar(select(Study.id).where(Study.name == name))
    if study_id is None:
        known = list(conn.scalars(select(Study.name).order_by(Study.name).limit(11)))
        listing = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise StorageError(
            f"no study named {name!r} in {mask_url(engine.url)}"
            + (f"; studies: {listing}" if known else "; it has no studies yet")
        )
    return int(study_id)
