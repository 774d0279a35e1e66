"""The database going away mid-study, as real processes (`insgd-study launch`).

- PostgreSQL stopped for 5 seconds, and later restarted (`pg_ctlcluster 15 main
  restart`), while trials run: the driver's writes wait for it (`--db-retry-seconds`,
  default 120 s), trials keep training, and the launch ends with exit code 0, exactly its
  target trials COMPLETE with all their epoch rows, Optuna agreeing. Both outages hit one
  launch (`outages`, read by a test each): a second launch of the same study would only
  repeat its ~20 s of starting up.
- A SQLite file locked by another process (BEGIN EXCLUSIVE) past a short bound: the
  launch stops with one line and exit code 1; `--resume` then finishes the study, both
  sides agreeing.

These stop the machine's PostgreSQL server for a moment (it is always started again).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pytest
import study_helpers as helpers

import storage

REPO = Path(__file__).resolve().parents[2]
TARGET = 8  # two outages, each with trials still to run after it
#: the SQLite lock falls on the third trial; the stop and the `--resume` need no more
LOCKED_TARGET = 4
EPOCHS = 2
pytestmark = pytest.mark.slow


STUDY = (
    f"--epochs {EPOCHS} --batch-size 8 --sampler random --sampler-seed 1 "
    "--norms none,l2 --max-concurrent 1 --fuse 1"
).split()


def _pg_running() -> bool:
    status = subprocess.run(["pg_ctlcluster", "15", "main", "status"], capture_output=True)
    return status.returncode == 0


@pytest.fixture(scope="module")
def pg_server():
    """`pg_ctlcluster 15 main ACTION`; the server is running again after the module."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        reason = "needs root and pg_ctlcluster to stop the PostgreSQL server"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)

    def control(action: str) -> None:
        subprocess.run(["pg_ctlcluster", "15", "main", action], check=True, timeout=120)

    try:
        yield control
    finally:
        if not _pg_running():
            subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=True, timeout=120)


def _start(
    url: str, name: str, tmp_path: Path, *extra: str, target: int = TARGET
) -> subprocess.Popen:
    return subprocess.Popen(
        helpers.launch_command(
            url, name, tmp_path / "ray", *STUDY, "--trials", str(target), *extra
        ),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_complete(driver: subprocess.Popen, url: str, name: str, count: int) -> None:
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the study never got going"
        try:
            rows = helpers.trials(url, name)
        except Exception:  # noqa: BLE001 - not created yet
            rows = []
        if sum(r.state == "COMPLETE" for r in rows) >= count:
            return
        time.sleep(0.05)


def _finish(driver: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, out, err


def _check_study(url: str, name: str, target: int = TARGET) -> list:
    """Exactly the target trials COMPLETE, each with all its epoch rows; Optuna agrees."""
    rows = helpers.trials(url, name)
    complete = [r for r in rows if r.state == "COMPLETE"]
    assert len(complete) == target, [(r.trial_number, r.state) for r in rows]
    assert not [r for r in rows if r.state == "RUNNING"]
    engine = storage.open_database(url)
    for row in complete:
        epochs = storage.queries.trial_epochs(engine, name, row.trial_number)
        assert [e.epoch for e in epochs] == list(range(1, row.epochs_completed + 1))
        assert row.epochs_completed == EPOCHS or row.diverged
        assert row.final_val_accuracy == epochs[-1].val_accuracy
    states = [t.state for t in helpers.optuna_trials(url, name)]
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(complete)
    assert optuna.trial.TrialState.RUNNING not in states
    assert optuna.trial.TrialState.WAITING not in states
    storage.dispose_engines()
    return rows


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Outages:
    """What the launch through both outages did, and when the server was away."""

    url: str
    name: str
    code: int
    out: str
    err: str
    stopped: datetime  # the 5-second stop
    started: datetime
    restarted: datetime  # the restart began


@pytest.fixture(scope="module")
def outages(tmp_path_factory, module_postgres_url, pg_server) -> Outages:
    """One launch on PostgreSQL through both outages: the server stopped for 5 seconds
    once 2 trials are COMPLETE, then restarted once 4 are, with trials still to run (the
    writes held back by the stop land at once when it ends: ~4 COMPLETE by then)."""
    url, name = module_postgres_url, "outages"
    driver = _start(url, name, tmp_path_factory.mktemp("outages"))
    try:
        _wait_for_complete(driver, url, name, 2)
        storage.dispose_engines()  # the test's own connections: not the driver's business
        stopped = datetime.now(UTC)
        pg_server("stop")
        time.sleep(5)
        pg_server("start")
        started = datetime.now(UTC)
        _wait_for_complete(driver, url, name, 4)
        storage.dispose_engines()
        restarted = datetime.now(UTC)
        pg_server("restart")
        code, out, err = _finish(driver)
    finally:
        if driver.poll() is None:
            driver.kill()
    return Outages(url, name, code, out, err, stopped, started, restarted)


@pytest.mark.postgres
def test_a_five_second_stop_of_the_server_mid_study(outages):
    assert outages.code == 0, outages.out + outages.err
    assert outages.err == ""
    assert "unavailable" in outages.out and "is back" in outages.out  # it saw the outage
    rows = _check_study(outages.url, outages.name)
    # the trials kept training while the database was away: Tune's loop went on
    events = [_utc(t) for r in rows for t in (r.started_at, r.finished_at)]
    assert any(outages.stopped <= t <= outages.started for t in events if t is not None), (
        outages.stopped,
        outages.started,
    )


@pytest.mark.postgres
def test_a_restart_of_the_server_mid_study(outages):
    assert outages.code == 0, outages.out + outages.err
    assert outages.err == ""
    # (the writes see the restart only if one falls in the ~2 s the server is away; a
    # pooled connection it closed is replaced when next used, without an error)
    rows = _check_study(outages.url, outages.name)
    # the restart came mid-study: trials finished after it, written to the new server
    finished = [_utc(r.finished_at) for r in rows if r.finished_at is not None]
    assert any(t > outages.restarted for t in finished), outages.restarted


def test_a_sqlite_lock_held_past_the_bound_stops_the_launch_and_resume_finishes_it(tmp_path):
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    driver = _start(url, "locked", tmp_path, "--db-retry-seconds", "3", target=LOCKED_TARGET)
    holder = None
    try:
        _wait_for_complete(driver, url, "locked", 2)
        storage.dispose_engines()
        holder = sqlite3.connect(db, isolation_level=None, timeout=60)
        holder.execute("BEGIN EXCLUSIVE")  # another process's write lock, held
        locked = time.monotonic()
        code, out, err = _finish(driver)
        held = time.monotonic() - locked
    finally:
        if holder is not None:
            holder.close()  # the lock goes with its connection
        if driver.poll() is None:
            driver.kill()
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "database is locked" in lines[0] and "unavailable for 3s" in lines[0]
    assert "--resume" in lines[0] and "Traceback" not in err
    assert held < 60  # the bound, not SQLite's 30 s busy timeout per write

    proc = subprocess.run(
        helpers.launch_command(url, "locked", tmp_path / "ray", "--resume"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{LOCKED_TARGET}/{LOCKED_TARGET} trials finished" in proc.stdout
    rows = _check_study(url, "locked", LOCKED_TARGET)
    numbers = [r.trial_number for r in rows]
    assert len(numbers) == len(set(numbers))
