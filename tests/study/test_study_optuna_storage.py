"""`study.search.optuna_storage.DriverStorage`: the driver's RUNNING Optuna trials served from
memory must always be what the database holds, and a study must sample exactly as on
Optuna's own storage."""

from __future__ import annotations

import contextlib
import math
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import event
from test_study_units import _searcher
from test_study_writes import _run_all

from study.config import merge
from study.run.runner import optuna_rdb_storage
from study.search.optuna_storage import DriverStorage
from study.search.searcher import METRIC

FIELDS = (
    "number",
    "state",
    "values",
    "datetime_start",
    "datetime_complete",
    "params",
    "distributions",
    "user_attrs",
    "system_attrs",
    "intermediate_values",
)


@pytest.fixture
def url(tmp_path) -> str:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _as_in_database(trial: optuna.trial.FrozenTrial) -> dict:
    seen = {name: getattr(trial, name) for name in FIELDS}
    seen["intermediate_values"] = {
        step: ("nan" if math.isnan(value) else value)
        for step, value in trial.intermediate_values.items()
    }
    return seen


def _same_as_database(driver: DriverStorage, url: str, trial_id: int) -> None:
    """What the driver serves equals a fresh read of the database, field by field."""
    fresh = optuna_rdb_storage(url).get_trial(trial_id)
    assert _as_in_database(driver.get_trial(trial_id)) == _as_in_database(fresh)


def test_running_trials_are_served_from_memory_as_the_database_has_them(db_url) -> None:
    url = db_url  # SQLite and PostgreSQL: the attributes' upsert is written per dialect
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = optuna_rdb_storage(url)
    driver = DriverStorage(rdb)
    study = optuna.create_study(storage=driver, study_name="s", direction="maximize")
    statements: list[str] = []
    event.listen(rdb.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    trial = study.ask()
    tid = trial._trial_id
    assert driver.running_trial_ids() == [tid]
    statements.clear()
    driver.get_trial(tid)
    assert statements == []  # a RUNNING trial of the driver's costs no query
    _same_as_database(driver, url, tid)

    trial.suggest_categorical("norm", ["none", "l1", "l2"])
    trial.suggest_float("lr", 1e-3, 10.0, log=True)
    trial.suggest_float("eps", 1e-6, 1e-2, log=True)
    _same_as_database(driver, url, tid)
    trial.report(0.25, 1)
    trial.report(float("nan"), 2)
    _same_as_database(driver, url, tid)
    driver.set_trial_user_attrs(tid, {"variant": "insgd-l2", "numbers": (3, 4)})
    trial.set_user_attr("diverged", False)
    driver.set_trial_system_attr(tid, "note", {"a": [1, 2]})
    _same_as_database(driver, url, tid)
    assert driver.get_trial(tid).user_attrs["numbers"] == [3, 4]  # as JSON gives it back

    kept = _as_in_database(driver.get_trial(tid))
    served = driver.get_trial(tid)
    served.user_attrs["variant"] = "changed by a caller"
    served.user_attrs["numbers"].append(5)  # nested JSON values are the caller's own too
    served.system_attrs["note"]["a"].append(3)
    served.params["lr"] = 123.0
    served.distributions.pop("eps")
    served.intermediate_values[1] = 0.0
    served.values = [1.0]
    assert _as_in_database(driver.get_trial(tid)) == kept  # callers get copies
    assert driver.get_trial(tid).user_attrs["variant"] == "insgd-l2"
    driver.set_trial_user_attrs(tid, {"variant": "insgd-l1", "new": 1})  # update and add
    _same_as_database(driver, url, tid)
    assert driver.get_trial(tid).user_attrs["variant"] == "insgd-l1"

    told = study.tell(trial, 0.5)
    assert driver.running_trial_ids() == []
    _same_as_database(driver, url, tid)  # the finished trial, completion time included
    fresh = optuna_rdb_storage(url).get_trial(tid)
    assert _as_in_database(told) == _as_in_database(fresh)
    statements.clear()
    assert driver.get_trial(tid).state == TrialState.COMPLETE
    assert statements == []  # kept in Optuna's cache of finished trials
    with pytest.raises(RuntimeError):  # a finished trial is refused, as by Optuna
        driver.set_trial_user_attrs(tid, {"variant": "sgd"})
    rdb.engine.dispose()


def test_ask_reloads_the_study_only_when_a_trial_waits(url) -> None:
    """`ask` looks for WAITING trials with one query; one enqueued by another process
    (another storage on the same database) is still the one the next ask runs."""
    rdb = optuna_rdb_storage(url)
    driver = DriverStorage(rdb)
    study = optuna.create_study(storage=driver, study_name="s", direction="maximize")
    first = study.ask()
    first.suggest_float("lr", 1e-3, 1.0, log=True)
    study.tell(first, 0.5)
    statements: list[str] = []
    event.listen(rdb.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    second = study.ask()
    assert not [s for s in statements if "trial_user_attributes" in s]  # no reload
    study.tell(second, state=TrialState.FAIL)

    other = optuna.load_study(study_name="s", storage=optuna_rdb_storage(url))
    other.enqueue_trial({"lr": 0.25})
    waiting = other.trials[-1]
    assert waiting.state == TrialState.WAITING
    statements.clear()
    third = study.ask()
    assert [s for s in statements if "trial_user_attributes" in s]  # reloaded, found it
    assert third.number == waiting.number
    assert third.suggest_float("lr", 1e-3, 1.0, log=True) == 0.25
    _same_as_database(driver, url, third._trial_id)
    study.tell(third, 0.75)
    _same_as_database(driver, url, third._trial_id)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]


def test_enqueued_trials_are_served_once_the_driver_starts_them(url) -> None:
    driver = DriverStorage(optuna_rdb_storage(url))
    study = optuna.create_study(storage=driver, study_name="s", direction="maximize")
    study.enqueue_trial({"norm": "l1", "lr": 0.1})
    assert driver.running_trial_ids() == []  # WAITING: nobody runs it yet
    trial = study.ask()
    assert driver.running_trial_ids() == [trial._trial_id]
    assert trial.suggest_categorical("norm", ["none", "l1", "l2"]) == "l1"
    assert trial.suggest_float("lr", 1e-3, 10.0, log=True) == 0.1
    _same_as_database(driver, url, trial._trial_id)
    assert "fixed_params" in driver.get_trial(trial._trial_id).system_attrs
    study.tell(trial, state=TrialState.PRUNED)
    assert driver.running_trial_ids() == []
    _same_as_database(driver, url, trial._trial_id)
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)
    _same_as_database(driver, url, failed._trial_id)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.FAIL]


def test_a_failed_write_drops_the_copy_so_reads_go_to_the_database(url) -> None:
    driver = DriverStorage(optuna_rdb_storage(url))
    study = optuna.create_study(storage=driver, study_name="s")
    first = study.ask()
    first.suggest_float("lr", 1e-3, 1.0, log=True)
    study.tell(first, 1.0)
    second = study.ask()
    with pytest.raises(ValueError):  # the same name with another distribution
        driver.set_trial_param(second._trial_id, "lr", 0.0, CategoricalDistribution(["a"]))
    assert driver.running_trial_ids() == []
    _same_as_database(driver, url, second._trial_id)  # now read from the database
    driver.set_trial_param(second._trial_id, "x", 0.5, FloatDistribution(0.0, 1.0))
    assert driver.get_trial(second._trial_id).params == {"x": 0.5}


@pytest.mark.parametrize("sampler", ["random", "qmc", "tpe", "grid"])
def test_a_seeded_study_samples_the_same_on_driver_and_optuna_storage(url, sampler) -> None:
    """Same configurations, Optuna numbers, values and every stored attribute, whether
    Optuna's own storage or the driver's serves the study."""
    flags = {"trials": 8, "sampler": sampler, "sampler_seed": 5, "epochs": 1}
    if sampler == "grid":
        flags = {"sampler": "grid", "lr_points": 4, "variants": ("sgd", "insgd-l2"), "epochs": 1}
    config = merge(flags=flags).config
    studies = {}
    for name, storage in (("plain", optuna_rdb_storage(url)), ("driver", None)):
        storage = storage or DriverStorage(optuna_rdb_storage(url))
        search, _ = _searcher(config, name=name, storage=storage)
        studies[name] = _run_all(search, config.target_trials)
    keys = ("trial_number", "variant", "lr", "eps", "seed", "optuna_trial")
    assert [{k: c[k] for k in keys} for c in studies["driver"]] == [
        {k: c[k] for k in keys} for c in studies["plain"]
    ]
    reread = optuna_rdb_storage(url)
    plain, driver = (
        optuna.load_study(study_name=name, storage=reread).trials for name in ("plain", "driver")
    )
    assert len(plain) == len(driver) == config.target_trials
    ignore = {"datetime_start", "datetime_complete"}
    assert [{k: v for k, v in _as_in_database(t).items() if k not in ignore} for t in driver] == [
        {k: v for k, v in _as_in_database(t).items() if k not in ignore} for t in plain
    ]


def _set_optuna_schema_version(url: str, version: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": version})
    engine.dispose()


def test_optuna_schema_is_checked_once_per_url_and_a_failed_check_is_not_remembered(
    tmp_path,
) -> None:
    from study.search.optuna_storage import rdb_storage

    checked = f"sqlite:///{tmp_path / 'checked.db'}"
    rdb_storage(checked).engine.dispose()  # checks, and creates Optuna's tables
    _set_optuna_schema_version(checked, "v0.0.0.a")
    rdb_storage(checked).engine.dispose()  # not checked again in this process

    outdated = f"sqlite:///{tmp_path / 'outdated.db'}"
    optuna.storages.RDBStorage(outdated).engine.dispose()
    _set_optuna_schema_version(outdated, "v0.0.0.a")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="version"):
            rdb_storage(outdated)


#: Optuna's per-trial tables and the columns that differ by nature between two runs.
_TRIAL_TABLES = (
    "trials",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
)
_RUN_COLUMNS = {"trial_id", "study_id", "datetime_start", "datetime_complete"}


def _stored_rows(url: str, study_name: str) -> dict[str, list[tuple]]:
    """Every row Optuna's tables hold for the study, by trial number: ids and times left
    out (they differ between two studies), except whether a completion time is set."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=(*_TRIAL_TABLES, "studies"))
    trials, studies = meta.tables["trials"], meta.tables["studies"]
    out = {}
    with engine.connect() as conn:
        for name in _TRIAL_TABLES:
            table = meta.tables[name]
            kept = [
                c
                for c in table.columns
                if c.name not in _RUN_COLUMNS and not (c.primary_key and name != "trials")
            ]
            if name == "trials":
                kept = [c for c in kept if c.name != "trial_id"]
                kept.append(table.c.datetime_complete.is_not(None).label("completed"))
                query = sa.select(*kept).select_from(table.join(studies))
            else:
                query = sa.select(trials.c.number, *kept).select_from(
                    table.join(trials).join(studies, trials.c.study_id == studies.c.study_id)
                )
            query = query.where(studies.c.study_name == study_name)
            out[name] = sorted(tuple(str(v) for v in row) for row in conn.execute(query))
    engine.dispose()
    return out


def _block(storage, blocks: bool):
    """`storage.one_transaction()` where asked for and the storage has it."""
    batch = getattr(storage, "one_transaction", None)
    return batch() if blocks and batch is not None else contextlib.nullcontext()


def _same_writes(
    storage, study_name: str, *, batched_attrs: bool, blocks: bool = False
) -> list[int]:
    """The writes a study makes, on `storage`; returns the trial ids. With `blocks`, the
    first trial's ask and its reports, attributes and tell are each one block of
    `DriverStorage.one_transaction` (as a launch makes them)."""
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    with _block(storage, blocks):
        first = study.ask()
        first.suggest_categorical("norm", ["none", "l1", "l2"])
        first.suggest_float("lr", 1e-3, 10.0, log=True)
        first.suggest_float("eps", 1e-6, 1e-2, log=True)
    with _block(storage, blocks):
        for step, value in ((1, 0.25), (2, float("nan")), (3, float("inf")), (4, float("-inf"))):
            first.report(value, step)
        storage.set_trial_intermediate_value(first._trial_id, 2, 0.75)  # again: nan -> finite
        attrs = {"variant": "insgd-l2", "diverged": False, "trial_numbers": [3, 4]}
        if batched_attrs:
            storage.set_trial_user_attrs(first._trial_id, attrs)
            storage.set_trial_user_attrs(first._trial_id, {"variant": "insgd-l1"})
        else:
            for key, value in {**attrs, "variant": "insgd-l1"}.items():
                first.set_user_attr(key, value)
        study.tell(first, 0.5)
    with _block(storage, blocks):
        second = study.ask()
        second.suggest_float("lr", 1e-3, 10.0, log=True)
    with _block(storage, blocks):  # a block with nothing but a tell
        study.tell(second, float("inf"))
    third = study.ask()
    third.suggest_categorical("norm", ["none", "l1", "l2"])
    third.report(0.1, 1)
    study.tell(third, state=TrialState.PRUNED)
    fourth = study.ask()
    study.tell(fourth, state=TrialState.FAIL)
    return [t._trial_id for t in (first, second, third, fourth)]


@pytest.fixture
def away_from_utc(monkeypatch):
    """Local time 5 hours behind UTC: Optuna stores naive UTC and serves local time, so a
    completion time converted the wrong way (or not at all) shows."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("blocks", [False, True], ids=["one-by-one", "one-transaction"])
def test_the_driver_stores_exactly_the_rows_optunas_storage_stores(
    db_url, away_from_utc, blocks
) -> None:
    """Parameters, intermediate values (nan, +-inf, a nan step written again as a number),
    user attributes and the final state and value (inf too) of COMPLETE, PRUNED and FAIL
    trials: the driver's own statements, one by one or in `one_transaction` blocks, leave
    every table as Optuna's storage does, and what the driver serves afterwards,
    completion times included, is what the database holds."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _same_writes(optuna_rdb_storage(db_url), "plain", batched_attrs=False, blocks=blocks)
    driver = DriverStorage(optuna_rdb_storage(db_url))
    trial_ids = _same_writes(driver, "driver", batched_attrs=True, blocks=blocks)
    plain, mine = _stored_rows(db_url, "plain"), _stored_rows(db_url, "driver")
    assert plain["trial_intermediate_values"]  # the comparison compares something
    assert mine == plain
    assert driver.running_trial_ids() == []
    for trial_id in trial_ids:
        _same_as_database(driver, db_url, trial_id)


def _watched(url: str, *, with_norm: bool) -> tuple:
    """A study on the driver's storage with one trial told (the parameter names' first
    use, which takes Optuna's path), and the lists the statements and commits on its
    engine are noted in from then on: (rdb, driver, study, statements, commits)."""
    rdb = optuna_rdb_storage(url)
    driver = DriverStorage(rdb)
    study = optuna.create_study(
        storage=driver,
        study_name="s",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),  # samples without reading trials
    )
    warm = study.ask()
    if with_norm:
        warm.suggest_categorical("norm", ["none", "l2"])
    warm.suggest_float("lr", 1e-3, 1.0, log=True)
    study.tell(warm, 0.5)
    statements: list[str] = []
    commits: list[int] = []
    event.listen(rdb.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    event.listen(rdb.engine, "commit", lambda conn: commits.append(1))
    return rdb, driver, study, statements, commits


def _verbs(statements: list[str]) -> list[str]:
    """The statements' first words, and the list emptied."""
    seen = [s.split()[0].upper() for s in statements]
    statements.clear()
    return seen


def test_the_drivers_writes_are_one_transaction_each_without_reads_back(url) -> None:
    """A new trial is its row and its number under the study row's lock; a parameter or
    an intermediate value a state check and one statement; a tell a locked state check,
    the value and the state: no ORM round trips, no read of the finished trial after."""
    rdb, driver, study, statements, commits = _watched(url, with_norm=False)

    def verbs() -> list[str]:
        return _verbs(statements)

    trial = study.ask()
    # any WAITING trial?; then under the study row's lock: the row, its number, the number
    assert verbs() == ["SELECT", "SELECT", "INSERT", "SELECT", "UPDATE"]
    assert trial.number == 1 and driver.running_trial_ids() == [trial._trial_id]
    _same_as_database(driver, url, trial._trial_id)
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    assert verbs() == ["SELECT", "INSERT"]
    trial.report(0.25, 1)
    assert verbs() == ["SELECT", "INSERT"]
    driver.set_trial_user_attrs(trial._trial_id, {"variant": "sgd", "diverged": False})
    assert verbs() == ["SELECT", "INSERT"]
    commits.clear()
    study.tell(trial, 0.75)
    assert verbs() == ["SELECT", "INSERT", "UPDATE"] and len(commits) == 1
    _same_as_database(driver, url, trial._trial_id)


@pytest.mark.parametrize("first_write", ["report", "tell"])
def test_a_trial_finished_by_another_process_is_refused_as_optuna_refuses_it(
    url, first_write
) -> None:
    """The driver's state check sees what another process did (e.g. failing the trial
    from the dashboard): its write is refused with Optuna's own error, nothing is
    written, and the trial is read from the database from then on."""
    driver = DriverStorage(optuna_rdb_storage(url))
    study = optuna.create_study(storage=driver, study_name="s", direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    trial.report(0.25, 1)
    optuna_rdb_storage(url).set_trial_state_values(trial._trial_id, TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        if first_write == "report":
            trial.report(0.5, 2)
        else:
            driver.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5])
    assert driver.running_trial_ids() == []
    _same_as_database(driver, url, trial._trial_id)
    stored = optuna_rdb_storage(url).get_trial(trial._trial_id)
    assert stored.state == TrialState.FAIL
    assert stored.intermediate_values == {1: 0.25} and stored.values is None


def test_trials_created_at_once_by_two_drivers_get_distinct_numbers(db_url) -> None:
    """The number is counted under the study row's lock, as Optuna counts it: two
    storages creating trials in one study at the same time never share a number."""
    import threading

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(storage=optuna_rdb_storage(db_url), study_name="s")
    drivers = [DriverStorage(optuna_rdb_storage(db_url)) for _ in range(2)]
    studies = [optuna.load_study(study_name="s", storage=d) for d in drivers]
    numbers: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def create(index: int) -> None:
        start.wait()
        for _ in range(15):
            numbers[index].append(studies[index].ask().number)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers[0] + numbers[1]) == list(range(30))
    stored = optuna.load_study(study_name="s", storage=optuna_rdb_storage(db_url)).trials
    assert sorted(t.number for t in stored) == list(range(30))
    for driver, mine in zip(drivers, numbers, strict=True):
        for number in mine:  # what each driver serves is what the database holds
            _same_as_database(driver, db_url, stored[number]._trial_id)


def test_one_transaction_writes_an_ask_and_a_tell_in_one_commit_each(db_url) -> None:
    """What a launch makes of a trial (`StudyOptunaSearch.ask_group` and `tell_group`):
    the ask is the new trial (under the study's lock) and then its parameters in one
    transaction; the reports, attributes and tell one transaction under the trial's lock.
    Until a block ends, the driver serves the trial as written."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb, driver, study, statements, commits = _watched(db_url, with_norm=True)

    def verbs() -> list[str]:
        return _verbs(statements)

    with driver.one_transaction():
        trial = study.ask()
        assert verbs() == ["SELECT", "SELECT", "INSERT", "SELECT", "UPDATE"]
        commits.clear()
        trial.suggest_categorical("norm", ["none", "l2"])
        trial.suggest_float("lr", 1e-3, 1.0, log=True)
        assert verbs() == [] and commits == []  # waiting for the block's end
        assert set(driver.get_trial(trial._trial_id).params) == {"norm", "lr"}
    assert verbs() == ["SELECT", "INSERT", "INSERT"] and len(commits) == 1
    _same_as_database(driver, db_url, trial._trial_id)

    commits.clear()
    with driver.one_transaction():
        trial.report(0.25, 1)
        driver.set_trial_user_attrs(trial._trial_id, {"variant": "sgd", "diverged": False})
        assert verbs() == []
        study.tell(trial, 0.75)
    # the trial's lock, its intermediate value, its attributes, its value, its state
    assert verbs() == ["SELECT", "INSERT", "INSERT", "INSERT", "UPDATE"] and len(commits) == 1
    _same_as_database(driver, db_url, trial._trial_id)
    assert driver.running_trial_ids() == []

    other = study.ask()  # a block with writes only: they are written at its end
    verbs()
    with driver.one_transaction():
        other.report(0.5, 1)
        with driver.one_transaction():  # a block inside a block: the outer one writes
            other.report(0.6, 2)
        assert statements == []
    assert verbs() == ["SELECT", "INSERT", "INSERT"]
    with driver.one_transaction():  # a block that writes nothing ends like any other
        pass
    other.report(0.7, 3)  # outside a block: at once
    assert verbs() == ["SELECT", "INSERT"]
    _same_as_database(driver, db_url, other._trial_id)
    rdb.engine.dispose()


@pytest.mark.parametrize("last", ["block end", "tell", "tell_group"])
def test_writes_waiting_in_a_block_for_a_trial_finished_elsewhere_fail_as_optunas(
    url, last
) -> None:
    """Another process fails the trial while the driver's writes wait in a block: at the
    block's end, or at the tell that would have written them, the first of them raises
    Optuna's own error (through `tell_group` too, where Tune's OptunaSearch only logs the
    errors of a tell), nothing of the block is written, and the trial is read from the
    database from then on."""
    driver = DriverStorage(optuna_rdb_storage(url))
    config = merge(flags={"trials": 2, "sampler": "random", "sampler_seed": 0}).config
    search, inner = _searcher(config, name="s", storage=driver)
    search.suggest("t0")
    trial = inner._ot_trials[next(iter(inner._ot_trials))]
    tid = trial._trial_id
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        if last == "tell_group":
            key = next(iter(inner._ot_trials))
            attrs = {"variant": "sgd"}
            optuna_rdb_storage(url).set_trial_state_values(tid, TrialState.FAIL)
            inner.tell_group(
                key,
                attrs,
                failed=False,
                value=0.5,
                reports=[{METRIC: 0.5, "training_iteration": 1}],
            )
        else:
            with driver.one_transaction():
                trial.report(0.25, 1)
                driver.set_trial_user_attrs(tid, {"variant": "sgd"})
                optuna_rdb_storage(url).set_trial_state_values(tid, TrialState.FAIL)
                if last == "tell":
                    driver.set_trial_state_values(tid, TrialState.COMPLETE, [0.5])
    assert driver.running_trial_ids() == []
    _same_as_database(driver, url, tid)
    stored = optuna_rdb_storage(url).get_trial(tid)
    assert stored.state == TrialState.FAIL
    assert stored.intermediate_values == {} and stored.user_attrs == {} and stored.values is None


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "no-returning"])
def test_a_new_trials_key_comes_back_with_or_without_returning(
    db_url, monkeypatch, returning
) -> None:
    """The driver's INSERT of a new trial returns its key (RETURNING, on its prepared
    statement); a database without RETURNING (SQLite before 3.35) gives it as SQLAlchemy
    finds it. Either way the trials served are the rows stored, numbered in order."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = optuna_rdb_storage(db_url)
    monkeypatch.setattr(rdb.engine.dialect, "insert_returning", returning)
    driver = DriverStorage(rdb)
    study = optuna.create_study(storage=driver, study_name="s", direction="maximize")
    asked = [study.ask() for _ in range(3)]
    assert [t.number for t in asked] == [0, 1, 2]
    assert driver.running_trial_ids() == sorted(t._trial_id for t in asked)
    stored = optuna.load_study(study_name="s", storage=optuna_rdb_storage(db_url)).trials
    assert [(t.number, t._trial_id) for t in stored] == [(t.number, t._trial_id) for t in asked]
    for trial in asked:
        _same_as_database(driver, db_url, trial._trial_id)
