"""Helpers shared by the study tests: the launch command, processes by id, and reading a
study back.

Processes are found through /proc and only among the descendants of a process the test
started, so a test never signals anything it did not start (other Ray clusters on the
machine included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def launch_command(url: str, name: str, results_dir: Path, *flags: str) -> list[str]:
    """`python -m study launch` of study `name` on `url` as a real process (this
    interpreter, so this checkout), Tune's results under `results_dir`, then `flags`.

    One builder for every test that launches a study as a process (a study's flags vary
    by test; the command, storage, name and results folder never do)."""
    return [
        sys.executable,
        "-m",
        "study",
        "launch",
        "--storage",
        url,
        "--name",
        name,
        "--results-dir",
        str(results_dir),
        *flags,
    ]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to `root` (not `root` itself)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _ppid(int(entry))
            if ppid is not None:
                parents[int(entry)] = ppid
    found = []
    for pid in parents:
        current = pid
        seen = set()
        while current in parents and current not in seen:
            seen.add(current)
            current = parents[current]
            if current == root:
                found.append(pid)
                break
    return sorted(found)


def trial_workers(root: int) -> list[int]:
    """Ray Tune's function-trainable actor processes started under `root`."""
    return [pid for pid in descendants(root) if cmdline(pid).startswith("ray::ImplicitFunc")]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mid_trial(row: Any) -> bool:
    """RUNNING with epochs to spare (of 8): a kill then never races the trial's last epoch."""
    return row.state == "RUNNING" and 1 <= row.epochs_completed <= 5


def _rows_when_readable(url: str, name: str) -> list[Any]:
    try:
        return trials(url, name)
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return []


def kill_workers_when(
    url: str, name: str, ready: Callable[[list[Any]], bool], timeout: float = 300
) -> tuple[threading.Thread, list[int]]:
    """Start a thread that SIGKILLs this process's Ray Tune trial workers once `ready`
    holds for study `name`'s rows (for a launch run in this process); the thread and the
    list it fills with the killed pids (empty if `ready` never held)."""
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            time.sleep(0.05)
            rows = _rows_when_readable(url, name)
            if rows and ready(rows):
                workers = trial_workers(os.getpid())
                if workers:
                    kill_all(workers)
                    killed.extend(workers)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread, killed


def kill_driver_when(
    argv: Sequence[str],
    url: str,
    name: str,
    ready: Callable[[list[Any]], bool],
    log: Path,
    timeout: float = 240,
) -> None:
    """Launch `argv` as a process (output to `log`), SIGKILL it once `ready` holds for
    study `name`'s rows, then kill what it started (its Ray, by id, as a reboot would).
    Fails the test if the launch ends first or `ready` never holds."""
    with open(log, "w") as out:
        driver = subprocess.Popen(
            list(argv), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        tree: set[int] = set()
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert driver.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the study never got going"
                tree.update(descendants(driver.pid))
                if ready(_rows_when_readable(url, name)):
                    break
                time.sleep(0.05)
            tree.update(descendants(driver.pid))
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            kill_all(sorted(tree))
            if driver.poll() is None:
                driver.kill()


def trials(url: str, name: str) -> list[Any]:
    import storage

    return storage.queries.list_trials(storage.open_database(url), name)


def optuna_trials(url: str, name: str) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=store).trials
    finally:
        store.engine.dispose()
