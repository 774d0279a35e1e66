"""The schema: what open_database creates, that it matches the models, SQLite's settings,
and that Optuna's RDBStorage lives in the same database without either side noticing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

import storage
from storage import migrate
from storage.schema import VERSION_TABLE, Base

OURS = {
    "insgd_studies",
    "insgd_trials",
    "insgd_epochs",
    "insgd_study_claims",
    "insgd_alembic_version",
}


def test_open_database_creates_prefixed_tables_at_head(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":  # psycopg 3, and dead connections are replaced
        assert engine.dialect.driver == "psycopg" and engine.pool._pre_ping
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == OURS
    assert migrate.current_revision(engine) == migrate.head_revision()
    indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("insgd_trials")}
    assert indexes["ix_insgd_trials_study_norm_lr"] == ["study_id", "norm", "lr"]
    assert indexes["ix_insgd_trials_study_state"] == ["study_id", "state"]
    uniques = [u["column_names"] for u in inspector.get_unique_constraints("insgd_trials")]
    assert ["study_id", "trial_number"] in uniques
    assert inspector.get_pk_constraint("insgd_epochs")["constrained_columns"] == [
        "trial_id",
        "epoch",
    ]


def test_migrations_produce_exactly_the_models(engine: Engine) -> None:
    """Autogenerate finds nothing to do: models and shipped migrations agree."""

    def ours(name: str | None, type_: str, _parents: object) -> bool:
        return type_ != "table" or (name in OURS and name != VERSION_TABLE)

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_name": ours, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_runs_wal_with_busy_timeout_and_foreign_keys(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    with pytest.raises(sa.exc.IntegrityError):  # foreign keys really are enforced
        with sqlite_engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO insgd_epochs (trial_id, epoch, diverged) VALUES (999, 0, 0)")
            )


def test_optuna_rdbstorage_coexists_on_the_same_url(db_url: str, writer, make_epoch) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Our schema first, Optuna second (as `launch` does), on the very same URL.
    rdb = optuna.storages.RDBStorage(storage.normalize_url(db_url))
    try:
        study = optuna.create_study(study_name="coexist", storage=rdb, direction="maximize")
        for lr in (0.01, 0.1, 1.0):
            study.enqueue_trial({"lr": lr})
        study.optimize(lambda t: 1.0 - abs(t.suggest_float("lr", 1e-3, 10, log=True) - 0.1), 3)

        writer.create_study("coexist", {"sampler": "tpe"}, "v1")
        for trial in study.trials:
            writer.finish_trial(
                "coexist",
                trial.number,
                {"lr": trial.params["lr"], "optimizer": "insgd", "norm": "l2"},
                [make_epoch(0, val_accuracy=trial.value)],
            )

        tables = set(sa.inspect(writer.engine).get_table_names())
        assert OURS <= tables
        assert {"studies", "trials", "trial_values", "alembic_version"} <= tables
        with writer.engine.connect() as conn:
            optuna_rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert optuna_rev != migrate.head_revision()  # two separate version tables

        # Both sides read their own data back; ours still opens read-only at head.
        reopened = optuna.load_study(study_name="coexist", storage=rdb)
        assert sorted(t.params["lr"] for t in reopened.trials) == [0.01, 0.1, 1.0]
        storage.open_database(db_url, upgrade=False)
        rows = storage.queries.list_trials(writer.engine, "coexist")
        assert [r.final_val_accuracy for r in rows] == [t.value for t in study.trials]
    finally:
        rdb.engine.dispose()
