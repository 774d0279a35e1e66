"""The write API: idempotent upserts, atomic trials, derived summaries, validation."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

import storage
from storage import queries
from storage.errors import StorageError

CONFIG = {"dataset": "digits", "model": "mlp", "optimizer": "insgd", "norm": "l2", "lr": 0.1,
          "eps": 0.01, "beta": None, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
          "epochs": 3, "seed": 7, "schedule": "cosine", "nesterov": False,
          "normalizer": "log", "granularity": "layer"}  # fmt: skip


def _counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        trials = conn.execute(sa.text("SELECT count(*) FROM insgd_trials")).scalar()
        epochs = conn.execute(sa.text("SELECT count(*) FROM insgd_epochs")).scalar()
    return trials, epochs


def test_retried_writes_never_duplicate_rows(writer, make_epoch) -> None:
    writer.create_study("s", {"space": "lr"}, "abc123")
    writer.create_study("s", {"space": "lr"}, "abc123")  # a retry returns the same study
    for _ in range(2):
        writer.start_trial("s", 0, {"config": CONFIG, "hostname": "h1", "node_id": "n1"})
        for epoch in range(3):
            writer.record_epoch("s", 0, epoch, make_epoch(epoch))
    assert _counts(writer.engine) == (1, 3)
    (running,) = queries.list_trials(writer.engine, "s")
    assert (running.state, running.epochs_completed) == ("RUNNING", 3)

    epochs = [make_epoch(e, val_accuracy=0.6 + e / 100) for e in range(3)]
    for _ in range(2):
        writer.finish_trial("s", 0, {"wall_seconds": 12.5, "device_name": "cpu"}, epochs)
    record = writer.record_epoch  # and a late duplicate of one epoch changes nothing
    record("s", 0, 2, make_epoch(2, val_accuracy=0.62))
    assert _counts(writer.engine) == (1, 3)

    (row,) = queries.list_trials(writer.engine, "s")
    assert (row.state, row.lr, row.norm, row.seed, row.epochs_planned) == (
        "COMPLETE",
        0.1,
        "l2",
        7,
        3,
    )
    assert (row.final_val_accuracy, row.best_val_accuracy, row.epochs_completed) == (0.62, 0.62, 3)
    assert (row.hostname, row.node_id, row.device_name, row.wall_seconds) == (
        "h1",
        "n1",
        "cpu",
        12.5,
    )
    assert row.params["schedule"] == "cosine" and row.params["nesterov"] is False
    assert row.started_at <= row.finished_at and row.finished_at.tzinfo is not None
    assert [e.val_accuracy for e in queries.trial_epochs(writer.engine, "s", 0)] == [
        0.6,
        0.61,
        0.62,
    ]


def test_a_trial_and_its_epochs_commit_atomically(writer, make_epoch, monkeypatch) -> None:
    writer.create_study("s", {}, "v")
    writer.start_trial("s", 4, {"lr": 0.5, "optimizer": "sgd"})

    def fail(*_args: object) -> None:
        raise RuntimeError("driver died mid-write")

    monkeypatch.setattr(storage.writer, "_summarize", fail)
    with pytest.raises(RuntimeError):
        writer.finish_trial("s", 4, {"state": "COMPLETE"}, [make_epoch(e) for e in range(5)])
    (row,) = queries.list_trials(writer.engine, "s")
    assert (row.state, row.epochs_completed) == ("RUNNING", 0)  # nothing of the finish is seen
    assert _counts(writer.engine) == (1, 0)

    monkeypatch.undo()
    writer.finish_trial("s", 4, {"state": "COMPLETE"}, [make_epoch(e) for e in range(5)])
    assert _counts(writer.engine) == (1, 5)


def test_values_round_trip_identically_on_both_backends(writer, make_epoch) -> None:
    writer.create_study("s", {"nan": float("nan"), "tuple": (1, 2)}, "v")
    assert writer.get_study("s").config == {"nan": None, "tuple": [1, 2]}
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    writer.start_trial("s", 1, {"optimizer": "SGD", "norm": "l2", "lr": 10, "started_at": started})
    writer.finish_trial(
        "s",
        1,
        {"state": "pruned", "stopped_early": 1, "final_train_loss": math.inf},
        [make_epoch(0, train_loss=math.inf, val_accuracy=0.1, diverged=True)],
    )
    (row,) = queries.list_trials(writer.engine, "s")
    assert (row.optimizer, row.norm, row.lr) == ("sgd", "none", 10.0)  # SGD's norm is "none"
    assert (row.state, row.stopped_early, row.diverged) == ("PRUNED", True, True)
    assert row.started_at == started
    assert row.final_train_loss == math.inf and row.to_json_dict()["final_train_loss"] is None
    (epoch,) = queries.trial_epochs(writer.engine, "s", 1)
    assert (epoch.train_loss, epoch.diverged) == (math.inf, True)
    writer.record_epoch("s", 1, 1, make_epoch(1, val_loss=float("nan")))
    assert queries.trial_epochs(writer.engine, "s", 1)[1].val_loss is None  # NaN -> NULL


def test_finish_trial_derives_missing_summary_from_epochs(sqlite_engine, make_epoch) -> None:
    writer = storage.ResultWriter(sqlite_engine)
    writer.create_study("s", {}, "v")
    accuracies = [0.3, 0.7, 0.5]
    epochs = [make_epoch(e, val_accuracy=a) for e, a in enumerate(accuracies)]
    writer.finish_trial("s", 0, {"lr": 0.1}, epochs)  # no start_trial: the row is created
    writer.finish_trial("s", 1, {"lr": 0.1, "final_val_accuracy": 0.9, "diverged": True}, epochs)
    derived, explicit = queries.list_trials(sqlite_engine, "s")
    assert (derived.final_val_accuracy, derived.best_val_accuracy) == (0.5, 0.7)
    assert (derived.epochs_completed, derived.final_train_loss, derived.diverged) == (
        3,
        epochs[-1]["train_loss"],
        False,
    )
    assert (explicit.final_val_accuracy, explicit.best_val_accuracy, explicit.diverged) == (
        0.9,
        0.7,
        True,
    )


def test_fail_running_trials_marks_only_running_ones(sqlite_engine) -> None:
    writer = storage.ResultWriter(sqlite_engine)
    writer.create_study("s", {}, "v")
    writer.start_trial("s", 0, {"lr": 0.1, "started_at": None})  # None: "now"
    first_start = queries.list_trials(sqlite_engine, "s")[0].started_at
    writer.start_trial("s", 0, {"hostname": "h"})  # a later update keeps the start time
    assert queries.list_trials(sqlite_engine, "s")[0].started_at == first_start
    writer.start_trial("s", 2, {"lr": 0.2})
    writer.start_trial("s", 1, {"lr": 0.3})
    writer.finish_trial("s", 1, {})
    assert writer.fail_running_trials("s") == [0, 2]
    assert writer.fail_running_trials("s") == []
    states = {r.trial_number: (r.state, r.error) for r in queries.list_trials(sqlite_engine, "s")}
    assert states[1] == ("COMPLETE", None)
    assert states[0][0] == states[2][0] == "FAIL" and "stopped" in states[0][1]
    assert all(r.started_at and r.finished_at for r in queries.list_trials(sqlite_engine, "s"))


def test_bad_input_is_a_storage_error_and_writes_nothing(sqlite_engine, make_epoch) -> None:
    writer = storage.ResultWriter(sqlite_engine)
    for call in (
        lambda: writer.start_trial("nope", 0, {}),
        lambda: writer.record_epoch("nope", 0, 0, make_epoch(0)),
        lambda: writer.finish_trial("nope", 0, {}),
        lambda: writer.fail_running_trials("nope"),
    ):
        with pytest.raises(StorageError, match="no study named 'nope'"):
            call()
    writer.create_study("s", {"a": 1}, "v")
    with pytest.raises(StorageError, match="already exists .* different configuration"):
        writer.create_study("s", {"a": 2}, "v")
    bad = [
        (lambda: writer.start_trial("s", 0, {"state": "DONE"}), "state must be one of"),
        (lambda: writer.finish_trial("s", 0, {"state": "DONE"}), "state must be one of"),
        (lambda: writer.start_trial("s", 0, {"norm": "l3"}), "norm must be one of"),
        (lambda: writer.start_trial("s", 0, {"lr": "fast"}), "lr must be a number"),
        (lambda: writer.start_trial("s", 0, {"seed": 1.5}), "seed must be an integer"),
        (lambda: writer.start_trial("s", -1, {}), "trial_number must be an integer >= 0"),
        (lambda: writer.start_trial("s", 0, {"started_at": "yesterday"}), "ISO 8601"),
        (lambda: writer.record_epoch("s", 0, 1, make_epoch(2)), "epoch 1 was given metrics"),
        (lambda: writer.record_epoch("s", 0, -1, {}), "epoch must be an integer >= 0"),
        (lambda: writer.record_epoch("s", 0, 0, make_epoch(0, val_accuracy="x")), "a number"),
        (lambda: writer.finish_trial("s", 0, {}, [{"val_accuracy": 1}]), "with an 'epoch'"),
        (lambda: writer.create_study("", {}, "v"), "study name"),
    ]
    for call, message in bad:
        with pytest.raises(StorageError, match=message):
            call()
    assert _counts(sqlite_engine) == (0, 0)


def test_writers_wait_for_and_retry_a_held_sqlite_lock(sqlite_url, monkeypatch) -> None:
    """Another process holding the write lock: the writer waits (busy timeout), and past
    the timeout retries the whole transaction, instead of failing with 'database is locked'."""
    monkeypatch.setattr(storage.engine, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    engine = storage.open_database(sqlite_url)
    writer = storage.ResultWriter(engine)
    writer.create_study("s", {}, "v")
    path = sqlite_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.6, blocker.rollback)
    timer.start()
    started = time.monotonic()
    try:
        writer.start_trial("s", 0, {"lr": 0.1})  # first attempts hit "database is locked"
    finally:
        timer.join()
        blocker.close()
    assert time.monotonic() - started >= 0.5  # it really waited for the lock
    assert _counts(engine) == (1, 0)
    storage.dispose_engines()


def test_upsert_insert_per_dialect_and_postgres_imported_only_when_used() -> None:
    import subprocess
    import sys

    from sqlalchemy.dialects import postgresql, sqlite

    from storage.dialects import upsert_insert

    assert upsert_insert("sqlite") is sqlite.insert
    assert upsert_insert("postgresql") is postgresql.insert
    assert upsert_insert("mysql") is None
    # a SQLite study's writes never import the PostgreSQL dialect (~0.2 s of every command)
    probe = (
        "import sys, storage, storage.writer, study.search.optuna_storage, study.run.recorder; "
        "print('sqlalchemy.dialects.postgresql' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr


def _stored(engine: sa.Engine, study: str) -> list[tuple]:
    """Every trial and epoch row of `study`, without ids and write times."""
    skip = {"id", "study", "study_id", "trial_id", "recorded_at"}
    rows = []
    for trial in queries.list_trials(engine, study, order_by="trial_number"):
        kept = {k: v for k, v in dataclasses.asdict(trial).items() if k not in skip}
        epochs = [
            {k: v for k, v in dataclasses.asdict(e).items() if k not in skip}
            for e in queries.trial_epochs(engine, study, trial.trial_number)
        ]
        rows.append((kept, epochs))
    return rows


def test_write_all_writes_what_the_single_calls_write_in_one_transaction(
    writer, make_epoch
) -> None:
    """A one-epoch trial's last epoch, its end and the next trial's start (what the
    driver's Recorder batches), a trial restarted inside a batch, and epochs of a trial
    that does not finish in it: the same rows as the single calls, one COMMIT."""
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ended = datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC)
    start = {"config": CONFIG, "started_at": started, "params": {"variant": "insgd-l2"}}
    end = {"hostname": "h", "wall_seconds": 2.0, "finished_at": ended, "params": {"n": 1}}
    steps = [
        ("start_trial", (0, start)),
        ("record_epoch", (0, 1, make_epoch(1))),
        ("record_epoch", (0, 2, make_epoch(2, diverged=True, val_accuracy=0.1))),
        ("finish_trial", (0, end)),
        ("start_trial", (1, start)),
        ("record_epoch", (1, 1, make_epoch(1))),
        ("start_trial", (1, {**start, "params": {"restarted": True}})),  # a restart
        ("record_epoch", (1, 2, make_epoch(2))),
        ("finish_trial", (1, {**end, "state": "PRUNED", "stopped_early": True})),
        ("start_trial", (2, start)),
        ("record_epoch", (2, 1, make_epoch(1))),  # still running at the batch's end
    ]
    for name in ("single", "batch"):
        writer.create_study(name, {}, "v")
    for method, args in steps:
        getattr(writer, method)("single", *args)
    commits: list[int] = []
    sa.event.listen(writer.engine, "commit", lambda conn: commits.append(1))
    writer.write_all([(method, ("batch", *args)) for method, args in steps])
    assert len(commits) == 1
    single, batch = _stored(writer.engine, "single"), _stored(writer.engine, "batch")
    assert len(batch) == 3 and [len(epochs) for _, epochs in batch] == [2, 2, 1]
    assert batch == single
    states = [t.state for t in queries.list_trials(writer.engine, "batch", order_by="trial_number")]
    assert states == ["COMPLETE", "PRUNED", "RUNNING"]


def test_write_all_is_all_or_nothing_and_refuses_other_calls(writer, make_epoch) -> None:
    writer.create_study("s", {}, "v")
    good = [("start_trial", ("s", 0, {"lr": 0.1})), ("record_epoch", ("s", 0, 1, make_epoch(1)))]
    with pytest.raises(StorageError, match="no study named 'missing'"):
        writer.write_all([*good, ("start_trial", ("missing", 1, {"lr": 0.1}))])
    with pytest.raises(StorageError, match="write_all cannot run 'create_study'"):
        writer.write_all([*good, ("create_study", ("t", {}, "v"))])
    with pytest.raises(StorageError, match="trial_number"):  # checked before any write
        writer.write_all([*good, ("finish_trial", ("s", -1, {}))])
    assert _counts(writer.engine) == (0, 0)
    writer.write_all([])
    writer.write_all(good)
    assert _counts(writer.engine) == (1, 1)
