"""Migrations: an older database is upgraded with its rows intact, or the error says
exactly which command to run; a current database opens read-only for a read-only user."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

import storage
from storage import migrate
from storage.errors import StorageError
from storage.schema import VERSION_TABLE

BASE = "0001_base"


def _database_at_base(url: str) -> sa.Engine:
    """A database created by the first shipped revision, holding one study's rows."""
    engine = storage.engine.get_engine(url)
    migrate.upgrade_engine(engine, BASE)
    assert migrate.current_revision(engine) == BASE
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO insgd_studies (id, name, created_at, config, code_version) "
                "VALUES (1, 'old', :t, :config, 'v0')"
            ),
            {"t": "2025-01-02 03:04:05", "config": '{"epochs": 3}'},
        )
        for number, lr in enumerate((0.01, 0.1)):
            conn.execute(
                sa.text(
                    "INSERT INTO insgd_trials (id, study_id, trial_number, state, optimizer, "
                    "norm, lr, epochs_completed, final_val_accuracy, diverged, stopped_early) "
                    "VALUES (:id, 1, :n, 'COMPLETE', 'insgd', 'l2', :lr, 2, :acc, false, false)"
                ),
                {"id": number + 1, "n": number, "lr": lr, "acc": 0.5 + number / 10},
            )
            for epoch in range(2):
                conn.execute(
                    sa.text(
                        "INSERT INTO insgd_epochs (trial_id, epoch, val_accuracy, diverged) "
                        "VALUES (:t, :e, :acc, false)"
                    ),
                    {"t": number + 1, "e": epoch, "acc": 0.3 + epoch / 10},
                )
    return engine


def test_the_revision_chain_in_code_matches_the_shipped_scripts() -> None:
    assert list(migrate.REVISIONS) == migrate.script_revisions()
    assert migrate.base_revision() == BASE


def test_upgrade_from_base_keeps_every_row(db_url: str) -> None:
    engine = _database_at_base(db_url)
    assert "params" not in {c["name"] for c in sa.inspect(engine).get_columns("insgd_trials")}

    # Read-only open of an old schema: an error naming the exact command, nothing changed.
    with pytest.raises(StorageError) as info:
        storage.open_database(db_url, upgrade=False)
    assert f"run `insgd-study db upgrade --storage {storage.mask_url(db_url)}`" in str(info.value)
    assert migrate.current_revision(engine) == BASE

    before, after = storage.upgrade(db_url)
    assert (before, after) == (BASE, migrate.head_revision())
    rows = storage.queries.list_trials(engine, "old")
    assert [(r.trial_number, r.lr, r.final_val_accuracy, r.params) for r in rows] == [
        (0, 0.01, 0.5, None),
        (1, 0.1, 0.6, None),
    ]
    assert [e.val_accuracy for e in storage.queries.trial_epochs(engine, "old", 1)] == [0.3, 0.4]
    assert storage.queries.get_study(engine, "old").config == {"epochs": 3}
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("insgd_trials")}
    assert "ix_insgd_trials_study_norm_lr" in indexes

    # The new column is usable, and upgrading again is a no-op.
    storage.ResultWriter(engine).finish_trial("old", 1, {"config": {"schedule": "cosine"}})
    assert storage.queries.list_trials(engine, "old")[1].params == {"schedule": "cosine"}
    assert storage.upgrade(db_url) == (migrate.head_revision(), migrate.head_revision())
    storage.dispose_engines()


#: Rows of a database at 0002 (optimizer, norm, beta) and the variant 0003 backfills.
BACKFILLED = [
    ("sgd", "none", None, "sgd"),
    ("sgd", "l2", 1.0, "sgd"),  # SGD is SGD whatever its norm and beta say
    ("insgd", None, None, "sgd"),  # no norm: nothing normalized
    ("insgd", "none", 0.9, "sgd"),
    ("insgd", "l1", None, "insgd-l1"),
    ("insgd", "l2", 0.9, "insgd-l2"),
    ("insgd", "l2", 0.999, "insgd-l2"),
    ("insgd", "l1", 1.0, "insgd-l1-frozen"),  # the frozen-normalizer controls
    ("insgd", "l2", 1.0, "insgd-l2-frozen"),
    (None, "l2", None, "insgd-l2"),
]


def test_upgrade_to_0003_backfills_every_rows_variant(db_url: str) -> None:
    """Rows written before the `variant` column get the variant their optimizer, norm and
    beta say, on both backends, by the rule the study uses for old rows (`variant_of`)."""
    from study.config import variant_of

    engine = storage.engine.get_engine(db_url)
    migrate.upgrade_engine(engine, "0002_analysis_indexes")
    assert "variant" not in {c["name"] for c in sa.inspect(engine).get_columns("insgd_trials")}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO insgd_studies (id, name, created_at, config, code_version) "
                "VALUES (1, 'old', :t, :config, 'v0')"
            ),
            {"t": "2025-01-02 03:04:05", "config": '{"norms": ["none", "l1", "l2"]}'},
        )
        for number, (optimizer, norm, beta, _) in enumerate(BACKFILLED):
            conn.execute(
                sa.text(
                    "INSERT INTO insgd_trials (study_id, trial_number, state, optimizer, norm, "
                    "beta, lr, epochs_completed, diverged, stopped_early) "
                    "VALUES (1, :n, 'COMPLETE', :optimizer, :norm, :beta, 0.1, 1, false, false)"
                ),
                {"n": number, "optimizer": optimizer, "norm": norm, "beta": beta},
            )
    assert storage.upgrade(db_url) == ("0002_analysis_indexes", migrate.head_revision())
    rows = storage.queries.list_trials(engine, "old")
    assert [r.variant for r in rows] == [expected for *_, expected in BACKFILLED]
    assert [r.variant for r in rows] == [variant_of(r.optimizer, r.norm, r.beta) for r in rows]
    assert [r.trial_number for r in storage.queries.list_trials(
        engine, "old", where={"variant": "insgd-l2-frozen"}
    )] == [8]  # fmt: skip
    # a row written from now on has the variant its writer gives, or none
    writer = storage.ResultWriter(engine)
    writer.start_trial("old", 20, {"optimizer": "insgd", "norm": "l2", "variant": "insgd-l2"})
    writer.start_trial("old", 21, {"optimizer": "insgd", "norm": "l2", "beta": 1.0})
    new = storage.queries.list_trials(engine, "old", where="trial_number>=20")
    assert [r.variant for r in new] == ["insgd-l2", None]
    storage.dispose_engines()


def test_open_database_upgrades_an_old_schema_by_default(sqlite_url: str) -> None:
    _database_at_base(sqlite_url)
    engine = storage.open_database(sqlite_url)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert len(storage.queries.list_trials(engine, "old")) == 2
    storage.dispose_engines()


def test_a_schema_newer_than_the_code_is_refused(sqlite_engine: sa.Engine, sqlite_url) -> None:
    with sqlite_engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'"))
    for upgrade in (True, False):
        with pytest.raises(StorageError, match="'9999_future', which this insgd-study does not"):
            storage.open_database(sqlite_url, upgrade=upgrade)


def test_read_only_sqlite_file_opens_when_current(sqlite_engine: sa.Engine, tmp_path) -> None:
    storage.ResultWriter(sqlite_engine).create_study("s", {}, "v")
    storage.dispose_engines()
    read_only = f"sqlite:///file:{tmp_path / 'studies.db'}?mode=ro&uri=true"
    engine = storage.open_database(read_only, upgrade=False)
    assert [s.name for s in storage.queries.list_studies(engine)] == ["s"]
    with pytest.raises(StorageError, match="cannot write to .*readonly database"):
        storage.ResultWriter(engine).create_study("t", {}, "v")
    storage.dispose_engines()


def test_read_only_postgres_role_opens_when_current(postgres_url: str) -> None:
    engine = storage.open_database(postgres_url)
    storage.ResultWriter(engine).create_study("s", {"k": 1}, "v")
    role = f"insgd_ro_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
    read_only = postgres_url.replace("postgres@", f"{role}@")
    try:
        ro_engine = storage.open_database(read_only, upgrade=False)
        assert storage.queries.get_study(ro_engine, "s").config == {"k": 1}
        with pytest.raises(StorageError, match=f"cannot write to .*{role}.*permission denied"):
            storage.ResultWriter(ro_engine).create_study("t", {}, "v")
    finally:
        storage.dispose_engines()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        storage.dispose_engines()
