"""Prepared statements: the rows, results and errors of `conn.execute`, on the DBAPI cursor."""

from __future__ import annotations

import enum
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from storage.dialects import on_conflict, upsert_insert
from storage.prepared import Prepared, Rows


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


METADATA = sa.MetaData()
THINGS = sa.Table(
    "things",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("weight", sa.Double),
    sa.Column("ok", sa.Boolean, default=False),  # a constant default, as the results schema
    sa.Column("seen", sa.DateTime),
    sa.Column("doc", sa.JSON),
    sa.Column("colour", sa.Enum(Colour)),
    sa.Column("count", sa.Integer, default=0),
)
STAMPED = sa.Table(
    "stamped",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime, default=lambda: datetime(2026, 1, 2, 3, 4, 5)),  # per row
)
ROW = {
    "weight": 0.125,
    "ok": True,
    "seen": datetime(2026, 12, 2, 18, 38, 23, 123456),
    "doc": {"a": [1, 2.5, None], "b": "x"},
    "colour": Colour.GREEN,
}


@pytest.fixture
def engine(db_url):
    engine = sa.create_engine(db_url)
    METADATA.create_all(engine)
    yield engine
    engine.dispose()


def _rows(engine: sa.Engine, table: sa.Table = THINGS) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def _without_keys(rows: list[tuple]) -> list[tuple]:
    return [(r[1].replace("fast", "core"), *r[2:]) for r in rows]


def test_prepared_writes_and_reads_exactly_what_conn_execute_does(engine) -> None:
    add = Prepared(sa.insert(THINGS))
    with engine.begin() as conn:
        other = {**ROW, "weight": -3.5, "ok": False, "doc": [1, {"c": True}], "seen": None}
        conn.execute(sa.insert(THINGS), [{"name": "core-1", **ROW}, {"name": "core-2", **other}])
        conn.execute(sa.insert(THINGS), {"name": "core-3"})
        add.execute(conn, [{"name": "fast-1", **ROW}, {"name": "fast-2", **other}])  # many
        assert add.execute(conn, {"name": "fast-3"}).all() == []
    assert all(form is not None for form in add._forms.values())  # the cursor path ran
    rows = _rows(engine)
    assert _without_keys(rows[3:]) == _without_keys(rows[:3])
    assert rows[2][2:] == (None, False, None, None, None, 0)  # constant defaults, as Core

    pick = sa.select(THINGS.c.seen, THINGS.c.doc, THINGS.c.colour, THINGS.c.ok, THINGS.c.weight)
    pick = pick.where(THINGS.c.name == sa.bindparam("n"))
    read = Prepared(pick)
    with engine.connect() as conn:
        for name in ("core-1", "core-3"):
            expected = tuple(conn.execute(pick, {"n": name}).one())
            got = read.execute(conn, {"n": name})
            assert got.first() == expected
            assert got.all() == [expected]
            assert got.scalar() == expected[0] and got.scalar_one() == expected[0]
        assert read.execute(conn, {"n": "core-1"}).first() == (
            ROW["seen"], ROW["doc"], Colour.GREEN, True, 0.125
        )  # fmt: skip
        assert read.execute(conn, {"n": "nobody"}).first() is None
        assert read.execute(conn, {"n": "nobody"}).scalar_one_or_none() is None


def test_prepared_upserts_updates_and_returning(engine) -> None:
    insert = upsert_insert(engine.dialect.name)
    upsert = Prepared(
        on_conflict(insert, THINGS, ("name",), ["weight", "colour"]).returning(THINGS.c.id)
    )
    bump = Prepared(
        sa.update(THINGS)
        .where(THINGS.c.name == sa.bindparam("n"))
        .values(count=THINGS.c.count + sa.bindparam("by"), ok=True)
    )
    with engine.begin() as conn:
        first = upsert.execute(conn, {"name": "a", "weight": 1.0, "colour": Colour.RED})
        key = first.scalar_one()
        again = upsert.execute(conn, {"name": "a", "weight": 2.0, "colour": Colour.GREEN})
        assert again.scalar_one() == key  # the same row, updated
        bump.execute(conn, {"n": "a", "by": 3})
    (row,) = _rows(engine)
    assert (row[0], row[1], row[2], row[3], row[6], row[7]) == (
        key, "a", 2.0, True, Colour.GREEN, 3
    )  # fmt: skip


def test_database_errors_are_sqlalchemys_and_roll_back(engine) -> None:
    add = Prepared(sa.insert(THINGS))
    with engine.begin() as conn:
        add.execute(conn, {"name": "taken"})
    with pytest.raises(sa_exc.IntegrityError) as caught, engine.begin() as conn:
        add.execute(conn, {"name": "new"})
        add.execute(conn, {"name": "taken"})  # unique name
    assert isinstance(caught.value.orig, engine.dialect.loaded_dbapi.IntegrityError)
    assert "INSERT INTO things" in str(caught.value)
    assert [r[1] for r in _rows(engine)] == ["taken"]  # "new" rolled back with it
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        add.execute(conn, [{"name": "x"}, {"name": "x"}])  # executemany too


def test_cursor_listeners_and_per_row_defaults_take_conn_execute(engine) -> None:
    seen: list[str] = []
    add = Prepared(sa.insert(THINGS))
    sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with engine.begin() as conn:
        add.execute(conn, {"name": "watched", **ROW})
    assert [s for s in seen if s.startswith("INSERT INTO things")]  # the listener saw it
    assert add._forms == {}  # nothing compiled for the cursor path

    stamp = Prepared(sa.insert(STAMPED))
    fresh = sa.create_engine(engine.url)
    try:
        with fresh.begin() as conn:
            stamp.execute(conn, {"id": 1})
            stamp.execute(conn, [{"id": 2}, {"id": 3}])
        assert set(stamp._forms.values()) == {None}  # a per-row default: SQLAlchemy's path
        assert [r[1] for r in _rows(fresh, STAMPED)] == [datetime(2026, 1, 2, 3, 4, 5)] * 3
    finally:
        fresh.dispose()


def test_rows_scalar_one_wants_exactly_one_row() -> None:
    with pytest.raises(sa_exc.NoResultFound):
        Rows([]).scalar_one()
    with pytest.raises(sa_exc.MultipleResultsFound):
        Rows([(1,), (2,)]).scalar_one()
    with pytest.raises(sa_exc.MultipleResultsFound):
        Rows([(1,), (2,)]).scalar_one_or_none()
    assert Rows([(7,)]).scalar_one() == 7 and Rows([]).scalar() is None


def test_a_connection_without_begin_commits_and_rolls_back_as_with_execute(engine):
    """`engine.connect()` then `commit()`: the prepared row is kept, as `conn.execute`'s
    (autobegin); without the commit it is rolled back when the connection closes."""
    stmt = Prepared(sa.insert(THINGS))
    with engine.connect() as conn:
        stmt.execute(conn, {"name": "kept", **ROW})
        assert conn.in_transaction()
        conn.commit()
    with engine.connect() as conn:
        stmt.execute(conn, {"name": "dropped", **ROW})
    assert [row[1] for row in _rows(engine)] == ["kept"]
