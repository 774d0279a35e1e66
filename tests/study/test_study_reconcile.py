"""Optuna's trials repaired from the results table (`study.search.reconcile`), on SQLite
and PostgreSQL: every way a launch stopped between its two writes of a trial."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import optuna
import pytest

import storage
from storage.urls import normalize_url
from study.search.reconcile import reconcile

TrialState = optuna.trial.TrialState
FINISHED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _epochs(*accuracies: float) -> list[dict]:
    return [
        {"epoch": n, "val_accuracy": acc, "train_loss": 1.0, "diverged": False}
        for n, acc in enumerate(accuracies, start=1)
    ]


def _result(writer, number, optuna_trial, state, seed=0, lr=None, accuracies=(0.5, 0.7)):
    fields = {
        "norm": "l2",
        "lr": lr if lr is not None else 0.01 * (number + 1),
        "eps": 0.01,
        "seed": seed,
        "params": {"variant": "insgd-l2", "optuna_trial": optuna_trial},
    }
    writer.start_trial("s", number, fields)
    if state == "RUNNING":
        return
    end = {"state": state, "finished_at": FINISHED_AT + timedelta(minutes=number)}
    if state == "FAIL":
        end["error"] = "boom"
    writer.finish_trial("s", number, end, _epochs(*accuracies))


@pytest.fixture
def study(db_url):
    engine = storage.open_database(db_url)
    writer = storage.ResultWriter(engine)
    writer.create_study("s", {"seeds": 1}, "test")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = optuna.storages.RDBStorage(normalize_url(db_url))
    ot = optuna.create_study(study_name="s", storage=rdb, direction="maximize")
    yield engine, writer, ot
    for fresh in _opened:
        fresh.engine.dispose()
    _opened.clear()
    rdb.engine.dispose()
    storage.dispose_engines()


_opened: list = []


def _reread(ot):
    """Optuna's trials as the database holds them (a study's own storage caches the
    finished ones)."""
    rdb = optuna.storages.RDBStorage(ot._storage._backend.url)
    _opened.append(rdb)
    return optuna.load_study(study_name="s", storage=rdb).trials


def _ask(ot, lr):
    trial = ot.ask()
    trial.suggest_categorical("norm", ["none", "l2"])
    trial.suggest_float("lr", 1e-3, 10, log=True)
    return trial


def _run(engine, seeds=1):
    rows = storage.queries.list_trials(engine, "s")

    def curves():
        found: dict[int, dict[int, float]] = {}
        for epoch in storage.queries.study_epochs(engine, "s"):
            found.setdefault(epoch.trial_number, {})[epoch.epoch] = epoch.val_accuracy
        return found

    return reconcile(engine, "s", rows, seeds, curves)


def test_optuna_is_made_to_say_what_the_results_table_says(study):
    engine, writer, ot = study
    # 0: both COMPLETE: untouched
    t0 = _ask(ot, 0.01)
    t0.set_user_attr("trial_numbers", [0])
    ot.tell(t0, 0.7)
    _result(writer, 0, 0, "COMPLETE")
    # 1: told COMPLETE, but its results row never finished (then FAIL on --resume)
    t1 = _ask(ot, 0.02)
    t1.set_user_attr("trial_numbers", [1])
    ot.tell(t1, 0.7)
    _result(writer, 1, 1, "FAIL")
    # 2: finished in the results table, its tell lost: told here from the rows
    _ask(ot, 0.03)
    _result(writer, 2, 2, "COMPLETE", accuracies=(0.4, 0.6))
    # 3: RUNNING in both (the dead launch's; --resume marked the results row FAIL)
    _ask(ot, 0.04)
    _result(writer, 3, 3, "FAIL")
    # 4: told FAIL while the results row was PRUNED
    t4 = _ask(ot, 0.05)
    ot.tell(t4, state=TrialState.FAIL)
    _result(writer, 4, 4, "PRUNED", accuracies=(0.3,))
    # 5: enqueued and never run
    ot.enqueue_trial({"norm": "l2", "lr": 0.06})
    before = {t.number: t for t in ot.trials}

    repairs = _run(engine)
    assert {r.number: r.state for r in repairs} == {
        1: "FAIL",
        2: "COMPLETE",
        3: "FAIL",
        4: "PRUNED",
        5: "FAIL",
    }
    after = {t.number: t for t in _reread(ot)}
    assert after[0].state == TrialState.COMPLETE and after[0].value == pytest.approx(0.7)
    assert after[0].datetime_complete == before[0].datetime_complete
    assert after[1].state == TrialState.FAIL and after[1].value is None
    assert after[1].datetime_complete == before[1].datetime_complete
    told = after[2]
    assert told.state == TrialState.COMPLETE and told.value == pytest.approx(0.6)
    assert told.intermediate_values == pytest.approx({1: 0.4, 2: 0.6})
    assert told.user_attrs == {"variant": "insgd-l2", "diverged": False, "trial_numbers": [2]}
    assert told.datetime_complete is not None
    assert after[3].state == TrialState.FAIL and after[5].state == TrialState.FAIL
    assert after[4].state == TrialState.PRUNED and after[4].value == pytest.approx(0.3)
    results = {r.trial_number: r.state for r in storage.queries.list_trials(engine, "s")}
    assert sum(s == "COMPLETE" for s in results.values()) == sum(
        t.state == TrialState.COMPLETE for t in after.values()
    )
    assert _run(engine) == []  # agreeing now: nothing more to do


def test_a_configuration_with_seeds_is_told_from_every_seeds_row(study):
    """--seeds 2: seed 0 finished under an earlier Optuna trial (which failed with seed
    1), seed 1 re-ran under a new one whose tell was lost: told from both rows."""
    engine, writer, ot = study
    t0 = _ask(ot, 0.1)
    t0.set_user_attr("trial_numbers", [0, 1])
    ot.tell(t0, state=TrialState.FAIL)
    _result(writer, 0, 0, "COMPLETE", seed=0, lr=0.1, accuracies=(0.2, 0.4))
    _result(writer, 1, 0, "FAIL", seed=1, lr=0.1)
    _ask(ot, 0.1)  # Optuna trial 1: seed 1 again, as trial 2
    _result(writer, 2, 1, "COMPLETE", seed=1, lr=0.1, accuracies=(0.4, 0.8))
    _ask(ot, 0.2)  # Optuna trial 2: one seed finished, the other never ran: FAIL
    _result(writer, 3, 2, "COMPLETE", seed=0, lr=0.2)

    repairs = _run(engine, seeds=2)
    assert {r.number: r.state for r in repairs} == {1: "COMPLETE", 2: "FAIL"}
    trials = _reread(ot)
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.COMPLETE
    assert trials[1].value == pytest.approx(0.6)
    assert trials[1].intermediate_values == pytest.approx({1: 0.3, 2: 0.6})
    assert trials[1].user_attrs["trial_numbers"] == [0, 2]
    assert trials[2].state == TrialState.FAIL


def test_nothing_to_do_without_an_optuna_study(sqlite_url):
    engine = storage.open_database(sqlite_url)
    try:
        writer = storage.ResultWriter(engine)
        writer.create_study("s", {"seeds": 1}, "test")
        _result(writer, 0, 0, "COMPLETE")
        assert _run(engine) == []
    finally:
        storage.dispose_engines()
