"""Optuna's own definition of a storage, held against the driver's storage.

`study.search.optuna_storage.DriverStorage` reaches into Optuna's private modules to
serve the driver's RUNNING trials from memory and write them with its own statements
(`study.search.optuna_private`). Its own tests (test_study_optuna_storage.py) check the
rows it writes against Optuna's; these run Optuna's conformance suite for third-party
storages (`optuna.testing.pytest_storages.StorageTestCase`, shipped with Optuna) on the
storage exactly as a launch builds it (`study.run.runner.optuna_driver_storage`), on
SQLite and on PostgreSQL, so an Optuna upgrade that changes what a storage must do fails
here, by the name of the broken rule. Each test starts from the empty tables the same call
creates: it creates them once per module (not ~120 times), and each test gets a copy of
that SQLite file, or the PostgreSQL database with every table it left empty truncated.
"""

from __future__ import annotations

import ast
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.testing.pytest_storages import StorageTestCase
from optuna.trial import TrialState

from study.run.runner import optuna_driver_storage
from study.search import optuna_private
from study.search.optuna_storage import DriverStorage

ROOT = Path(__file__).resolve().parents[2]


def _with_optuna_tables(url: str) -> None:
    """Optuna's tables in the empty database `url`, as a launch's storage creates them."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_driver_storage(url)._backend.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding Optuna's empty tables, for each test to copy."""
    path = tmp_path_factory.mktemp("optuna-template") / "template.db"
    _with_optuna_tables(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def postgres_with_optuna_tables(module_postgres_url: str) -> tuple[str, list[str]]:
    """A PostgreSQL database holding Optuna's tables, and the names of those its creation
    left empty (all but Optuna's version rows): what each test empties again."""
    _with_optuna_tables(module_postgres_url)
    engine = sa.create_engine(module_postgres_url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            empty = [
                t
                for t in tables
                if conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar() == 0
            ]
    finally:
        engine.dispose()
    return module_postgres_url, empty


def _emptied(url: str, tables: list[str]) -> str:
    """`url` with `tables` as their creation left them: rows gone, ids from 1 again, and
    no session of an earlier test left (one could hold a lock)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            names = ", ".join(f'"{t}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStorage]:
    """The driver's storage on Optuna's empty tables: SQLite, then PostgreSQL."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if request.param == "sqlite":
        path = tmp_path / "studies.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = _emptied(*request.getfixturevalue("postgres_with_optuna_tables"))
    driver = optuna_driver_storage(url)
    try:
        yield driver
    finally:
        driver._backend.engine.dispose()  # before conftest drops the database


class TestDriverStorage(StorageTestCase):
    """Every rule of Optuna's `StorageTestCase`, on the driver's storage."""


def test_the_suite_runs_on_the_driver_storage(storage: BaseStorage) -> None:
    """The fixture above is the one the suite's tests take (not Optuna's placeholder,
    which raises NotImplementedError), and it is the driver's own storage."""
    assert isinstance(storage, DriverStorage)


def test_a_restored_copy_reads_the_database_not_the_drivers_running_trials(
    storage: BaseStorage,
) -> None:
    """A pickled copy (another process) is not the driver: the RUNNING trials the driver
    serves from memory are not handed to it, its reads of them go to the database, and
    both keep writing with their own statements."""
    assert isinstance(storage, DriverStorage)
    study_id = storage.create_new_study(directions=[StudyDirection.MAXIMIZE])
    trial_id = storage.create_new_trial(study_id)
    assert storage.running_trial_ids() == [trial_id]

    restored = pickle.loads(pickle.dumps(storage))
    try:
        assert restored.running_trial_ids() == []
        storage.set_trial_user_attr(trial_id, "by", "driver")
        assert restored.get_trial(trial_id).user_attrs == {"by": "driver"}
        with restored.one_transaction():
            restored.set_trial_intermediate_value(trial_id, 1, 0.5)
        mine = restored.create_new_trial(study_id)
        assert restored.running_trial_ids() == [mine]
        restored.set_trial_state_values(mine, TrialState.COMPLETE, [0.25])
        assert storage.get_trial(mine).values == [0.25]
    finally:
        restored._backend.engine.dispose()


def test_the_installed_optuna_has_every_private_name_the_project_uses() -> None:
    """Each name of `optuna_private.NEEDED`, with the members the project touches, is in
    the installed Optuna; if not, the failure names each one, why it is needed and the
    installed version."""
    gaps = optuna_private.missing()
    assert not gaps, optuna_private.describe(gaps)


def test_a_missing_private_name_is_named_with_the_installed_version(monkeypatch) -> None:
    gone = optuna_private.Needed("optuna.storages._cached_storage:_Gone", "a test's name")
    member = optuna_private.Needed("optuna.trial:FrozenTrial", "a test's member", ("_gone",))
    monkeypatch.setattr(optuna_private, "NEEDED", (gone, member))
    gaps = optuna_private.missing()
    assert gaps == ["optuna.storages._cached_storage:_Gone", "optuna.trial:FrozenTrial._gone"]
    message = optuna_private.describe(gaps)
    assert f"Optuna {optuna.__version__} lacks" in message
    assert "_Gone: a test's name" in message and "FrozenTrial._gone: a test's member" in message


def test_every_private_import_is_listed_in_optuna_private() -> None:
    """What `optuna_private` imports from Optuna is in its table (so the test above
    checks it), and nothing else in the repository imports Optuna's private modules or
    names: they have one place, which says why each is needed."""
    source = (ROOT / "study" / "search" / "optuna_private.py").read_text()
    listed = {needed.name for needed in optuna_private.NEEDED}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna."):
            for alias in node.names:
                name = f"{node.module}:{alias.name}"
                assert name in listed or any(
                    n.startswith(f"{node.module}.{alias.name}:") for n in listed
                ), name

    offenders = []
    for folder in ("study", "benchmarks", "tests", "storage", "trainers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name != "optuna_private.py":
                offenders += [
                    f"{path.relative_to(ROOT)}: {name}" for name in _private_imports(path)
                ]
    assert not offenders, "import these through study.search.optuna_private:\n" + "\n".join(
        offenders
    )


def _private_imports(path: Path) -> list[str]:
    """The names `path` imports from Optuna's private modules, or private names from its
    public ones (`from optuna.x._y import z`, `import optuna._x`, `from optuna.x import _z`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            found += [m for m in modules if m.startswith("optuna.") and "._" in m]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            module = node.module or ""
            for alias in node.names:
                if "._" in module or alias.name.startswith("_"):
                    found.append(f"{module}:{alias.name}")
    return found
