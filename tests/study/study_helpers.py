"""Helpers shared by the study tests: the launch command, processes by id, and reading a
study back.

Processes are found through /proc and only among the descendants of a process the test
started, so a test never signals anything it did not start (other Ray clusters on the
machine included).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


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
