"""Hot statements compiled once and run on the connection's own DBAPI cursor.

Why: the driver writes ~20 statements per trial (Optuna's rows and the results rows, on
its writes thread) and on a 2-core machine that thread's CPU is taken from the trials.
SQLAlchemy's `Connection.execute` of a statement it has already compiled still costs
~40 us of CPU (a cache key, an execution context, parameter processing, events, a
result object) against ~3 us for the DBAPI cursor itself (SQLite, `benchmarks/
driver_writes.py`): most of what a trial's writes cost beyond the database's own work.

What stays SQLAlchemy's, so the rows are exactly those `conn.execute` writes: the SQL is
the statement compiled for the connection's dialect (once per set of parameter names),
the parameters go through that compilation's `construct_params` and its bind processors
(enums, datetimes, JSON, booleans as the dialect stores them), result rows through the
result processors of its columns, and the transaction is the connection's. A DBAPI
error is raised as SQLAlchemy raises it (`sqlalchemy.exc.DBAPIError.instance`: an
`IntegrityError`, an `OperationalError` ...; a lost connection invalidated), so callers'
error handling and retries do not change.

What takes `conn.execute` instead: a statement SQLAlchemy must add to (a column default
computed per row, expanding or literal parameters; a column's constant default is added
to each row as SQLAlchemy adds it), and any connection whose engine has
cursor-event listeners (instrumentation, tests counting statements): they see every
statement as before. Listeners set on one `Connection` alone are not looked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Executable

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass
class _Form:
    """One compilation: its SQL, how a row of parameters becomes the DBAPI's, and the
    types of its result columns (None: the statement returns no rows), whose processors
    are looked up at the first fetch (some depend on the column type the DBAPI reports).
    """

    sql: str
    positions: tuple[str, ...] | None  # bind names in order (positional paramstyles)
    escaped: Mapping[str, str]  # bind name -> the name in the SQL (named paramstyles)
    processors: Mapping[str, Callable[[Any], Any]]
    construct: Callable[..., dict[str, Any]]
    sequence: Callable[[list[Any]], Any]
    results: tuple[Any, ...] | None
    defaults: Mapping[str, Any]  # scalar column defaults SQLAlchemy would add to each row
    processors_out: tuple[Callable[[Any], Any] | None, ...] | None = None

    def bind(self, row: Mapping[str, Any]) -> Any:
        if self.defaults:
            row = {**self.defaults, **row}
        values = self.construct(row, escape_names=False)
        processors = self.processors
        if self.positions is not None:
            return self.sequence(
                [
                    processors[key](values[key]) if key in processors else values[key]
                    for key in self.positions
                ]
            )
        return {
            self.escaped.get(key, key): processors[key](value) if key in processors else value
            for key, value in values.items()
        }


class Rows:
    """The rows a prepared statement returned, as tuples (processed as SQLAlchemy would)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def all(self) -> list[tuple[Any, ...]]:
        return self.rows

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        if not self.rows:
            raise sa_exc.NoResultFound("expected one row, got none")
        if len(self.rows) > 1:
            raise sa_exc.MultipleResultsFound("expected one row, got several")
        return self.rows[0][0]

    def scalar_one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise sa_exc.MultipleResultsFound("expected at most one row")
        return self.rows[0][0] if self.rows else None


class _Core:
    """What `Prepared.execute` returns when it took `conn.execute`: the same methods."""

    def __init__(self, result: Any) -> None:
        self._result = result

    def first(self) -> tuple[Any, ...] | None:
        row = self._result.first()
        return None if row is None else tuple(row)

    def all(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._result.all()]

    def scalar(self) -> Any:
        return self._result.scalar()

    def scalar_one(self) -> Any:
        return self._result.scalar_one()

    def scalar_one_or_none(self) -> Any:
        return self._result.scalar_one_or_none()


class Prepared:
    """A Core statement run on the DBAPI cursor of the connection it is given; see the
    module docstring. Build it once (module level or per storage) and call `execute`
    with one row of parameters, or a list of rows (executemany, no result rows)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[Any, ...], _Form | None] = {}
        self._lock = threading.Lock()

    def execute(self, conn: Connection, params: Params | None = None) -> Rows | _Core:
        many = not (params is None or isinstance(params, Mapping))
        rows = list(params) if many else [params or {}]
        # the engine's listeners (and those of `Engine` itself): a connection's own cursor
        # listeners are not looked for (their lookup costs more than the statement)
        dispatch = conn.engine.dispatch
        form = None
        if rows and not (dispatch.before_cursor_execute or dispatch.after_cursor_execute):
            form = self._form(conn.dialect, tuple(rows[0]), many)
        if form is None or (many and form.results is not None):
            return _Core(conn.execute(self.statement, params))
        bound = [form.bind(row) for row in rows]
        if not conn.in_transaction():
            # what `conn.execute` does first (autobegin): `conn.commit()` then commits it
            conn.begin()
        cursor = conn.connection.cursor()
        try:
            try:
                if many:
                    cursor.executemany(form.sql, bound)
                else:
                    cursor.execute(form.sql, bound[0])
                if form.results is None:
                    return Rows([])
                fetched = cursor.fetchall()
                description = cursor.description
            except conn.dialect.loaded_dbapi.Error as error:
                sent = bound if many else bound[0]
                raise _wrapped(conn, form.sql, sent, error, cursor) from error
        finally:
            cursor.close()
        processors = form.processors_out
        if processors is None:
            processors = form.processors_out = tuple(
                kind._cached_result_processor(conn.dialect, column[1])
                for kind, column in zip(form.results, description, strict=True)
            )
        if not any(processors):
            return Rows([tuple(row) for row in fetched])
        return Rows(
            [
                tuple(p(v) if p is not None else v for p, v in zip(processors, row, strict=True))
                for row in fetched
            ]
        )

    def _form(self, dialect: Dialect, keys: tuple[str, ...], many: bool) -> _Form | None:
        key = (id(dialect), dialect.name, frozenset(keys), many)
        try:
            return self._forms[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._forms:
                self._forms[key] = _compile(self.statement, dialect, keys, many)
            return self._forms[key]


def _compile(
    statement: Executable, dialect: Dialect, keys: tuple[str, ...], many: bool
) -> _Form | None:
    """The statement's compilation for `dialect` and these parameter names, or None if
    it needs what only `conn.execute` does (see the module docstring)."""
    compiled: Any = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(keys), for_executemany=many
    )
    if compiled.implicit_returning:
        # what SQLAlchemy adds to a one-row INSERT for `inserted_primary_key`, which
        # `execute` does not give: compiled as for several rows, the SQL has none
        compiled = statement.compile(  # type: ignore[attr-defined]
            dialect=dialect, column_keys=list(keys), for_executemany=True
        )
    if (
        compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.schema_translate_map
    ):
        return None
    defaults: dict[str, Any] = {}
    for columns, attribute in (
        (compiled.insert_prefetch, "default"),
        (compiled.update_prefetch, "onupdate"),
    ):
        for column in columns:
            default = getattr(column, attribute)
            if default is None or not default.is_scalar:
                return None  # computed per row (a function, a sequence): SQLAlchemy's job
            defaults[column.key] = default.arg
    results = None
    if compiled._result_columns:
        results = tuple(entry.type for entry in compiled._result_columns)
    return _Form(
        sql=compiled.string,
        positions=tuple(compiled.positiontup) if compiled.positional else None,
        escaped=dict(compiled.escaped_bind_names or {}),
        processors=dict(compiled._bind_processors),
        construct=compiled.construct_params,
        sequence=dialect.execute_sequence_format,
        results=results,
        defaults=defaults,
    )


def _wrapped(
    conn: Connection, sql: str, params: Any, error: Exception, cursor: Any
) -> BaseException:
    """`error` as `conn.execute` would raise it; a lost connection is invalidated."""
    dialect = conn.dialect
    lost = False
    try:
        lost = bool(dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor))
    except Exception:  # noqa: BLE001 - judging the error must not hide it
        lost = False
    wrapped = sa_exc.DBAPIError.instance(
        sql,
        params,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=lost,
        dialect=dialect,
        ismulti=isinstance(params, list),
    )
    if lost:
        conn.invalidate(wrapped)
    return wrapped
