"""Fixtures shared by every area's tests: databases on SQLite and the real PostgreSQL.

PostgreSQL runs on 127.0.0.1:5432 (user postgres, trust auth, database `test`).
Where it is missing a test that needs it is skipped on a laptop, but fails under
CI=true: CI must never go green by silently not testing PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

# The study tests' helper modules (`study_helpers`, `cluster_helpers`) are imported by name
# from every area (pytest runs with --import-mode=importlib, which does not put test
# folders on sys.path): tests/analysis reads tests/study's launch command too.
_STUDY_TESTS = str(Path(__file__).resolve().parent / "study")
if _STUDY_TESTS not in sys.path:
    sys.path.insert(0, _STUDY_TESTS)

PG_ADMIN_URL = os.environ.get(
    "INSGD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session", autouse=True)
def artifacts_outside_the_checkout(tmp_path_factory) -> Iterator[None]:
    """Reports attached to Optuna studies on PostgreSQL go to ./artifacts by default:
    keep every test's (and every launch subprocess's) out of the working tree."""
    key = "INSGD_ARTIFACT_DIR"
    old = os.environ.get(key)
    os.environ[key] = str(tmp_path_factory.mktemp("artifacts"))
    yield
    if old is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = old


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test with one torch CPU thread: tiny models on a shared 2-core machine run
    10-30x slower when a second OpenMP thread only spins."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh SQLite database file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'studies.db'}"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, its URL, and the database dropped afterwards.
    Where the server is missing: skipped, failed under CI=true."""
    import sqlalchemy as sa

    name = f"insgd_t_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may restart the server (tests/study/test_study_db_faults.py)
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
        admin.dispose()
        _pg_unavailable(" ".join(str(exc).split())[:200])
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one module, dropped after its last test: for
    a study launched once and read by several of the module's tests."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@dataclass(frozen=True)
class LaunchedStudy:
    """A study launched once, as a real process, for several tests to read."""

    url: str
    name: str
    variants: tuple[str, ...]
    lrs: tuple[float, ...]
    seeds: int
    epochs: int
    stdout: str
    artifacts: Path


@pytest.fixture(scope="session")
def frozen_study(tmp_path_factory: pytest.TempPathFactory) -> LaunchedStudy:
    """A real `insgd-study launch` (its own local Ray, as a process, started outside the
    checkout) of a grid of SGD, INSGD-l2 and its frozen control on digits: 4 lrs from
    0.01 to 10 (the last diverges), 2 seeds, 2 epochs, 24 trials, its reports in a folder
    of its own (INSGD_ARTIFACT_DIR).

    Read by tests/study/test_study_variants_launch.py (what each variant's rows and
    Optuna trials carry) and tests/analysis/test_analysis_frozen_study.py (the report
    agrees with the stored rows). Neither changes a trial (the report only attaches its
    note), so one launch serves both: a launch as a process is ~20 s on 2 cores."""
    import study_helpers as helpers

    folder = tmp_path_factory.mktemp("frozen-study")
    study = LaunchedStudy(
        url=f"sqlite:///{folder / 'studies.db'}",
        name="frozen",
        variants=("sgd", "insgd-l2", "insgd-l2-frozen"),
        lrs=(0.01, 0.1, 1.0, 10.0),
        seeds=2,
        epochs=2,
        stdout="",
        artifacts=folder / "artifacts",
    )
    flags = ["--dataset", "digits", "--model", "mlp", "--variants", ",".join(study.variants)]
    flags += ["--sampler", "grid", "--lr-min", str(study.lrs[0]), "--lr-max", str(study.lrs[-1])]
    flags += ["--lr-points", str(len(study.lrs)), "--seeds", str(study.seeds)]
    flags += ["--epochs", str(study.epochs)]
    launch = subprocess.run(
        helpers.launch_command(study.url, study.name, folder / "ray", *flags),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "INSGD_ARTIFACT_DIR": str(study.artifacts)},
        cwd=folder,
    )
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    return replace(study, stdout=launch.stdout)
