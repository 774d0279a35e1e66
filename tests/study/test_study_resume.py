"""`--resume` after the driver is killed with SIGKILL mid-study, as real processes.

The driver (`python -m study launch`, which starts its own local Ray) is killed once a
trial is finished and a third is RUNNING with an epoch recorded. Its Ray processes are
then killed by id as a machine reboot would. `launch --resume --name ...` (no other
flags: the stored configuration is used) must finish the study: earlier trials kept,
the RUNNING one marked FAIL and its configuration re-run, exactly the grid's number of
COMPLETE trials, no duplicate trial numbers, nothing RUNNING, in our tables and Optuna's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import study_helpers as helpers

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_resume_after_the_driver_is_killed(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = helpers.launch_command(url, "crash", tmp_path / "ray")
    study = (
        "--norms none,l2 --lr-points 2 --lr-min 0.01 --lr-max 0.3 --epochs 8 --batch-size 8 "
        "--max-concurrent 1 --fuse 1"
    ).split()
    helpers.kill_driver_when(  # one trial done, the next mid-trial
        base + study,
        url,
        "crash",
        lambda rows: (
            any(r.state == "COMPLETE" for r in rows) and any(helpers.mid_trial(r) for r in rows)
        ),
        tmp_path / "first.log",
    )

    before = {r.trial_number: r for r in helpers.trials(url, "crash")}
    killed = [n for n, r in before.items() if r.state == "RUNNING"]
    assert killed, "nothing was RUNNING when the driver died"
    kept = {n: r for n, r in before.items() if r.state == "COMPLETE"}

    proc = subprocess.run(
        base + ["--resume", "--max-concurrent", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a quiet local Ray: no log lines, status tables or worker output, only the study's own
    assert proc.stderr == ""
    assert not [
        line
        for line in proc.stdout.splitlines()
        if any(noise in line for noise in ("INFO", "WARNING", "(raylet)", "pid=", "╭", "Trial "))
    ]
    assert f"marked {len(killed)} trial(s) left RUNNING as FAIL" in proc.stdout
    assert "4/4 trials finished" in proc.stdout

    rows = helpers.trials(url, "crash")
    numbers = [r.trial_number for r in rows]
    assert len(numbers) == len(set(numbers))
    assert not [r for r in rows if r.state == "RUNNING"]
    complete = [r for r in rows if r.state == "COMPLETE"]
    assert len(complete) == 4  # the grid: 2 lrs x (SGD + INSGD-l2)
    configs = {(r.norm, round(r.lr, 12), r.eps, r.seed) for r in complete}
    assert len(configs) == 4
    after = {r.trial_number: r for r in rows}
    for number in killed:
        failed = after[number]
        assert failed.state == "FAIL" and failed.error
        rerun = [
            r
            for r in complete
            if (r.norm, r.lr, r.eps, r.seed) == (failed.norm, failed.lr, failed.eps, failed.seed)
        ]
        assert len(rerun) == 1 and rerun[0].trial_number > max(before)
    for number, row in kept.items():
        assert after[number].state == "COMPLETE"
        assert after[number].finished_at == row.finished_at  # untouched

    ot = helpers.optuna_trials(url, "crash")
    states = [t.state for t in ot]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert optuna.trial.TrialState.RUNNING not in states
    assert optuna.trial.TrialState.WAITING not in states
    # each killed trial's configuration, plus the next grid point when the dead driver had
    # already asked Optuna for it (asked ahead, never run: `study.search.searcher.SeededSearch`)
    assert len(killed) <= states.count(optuna.trial.TrialState.FAIL) <= len(killed) + 1


def test_ctrl_c_ends_the_launch_cleanly_and_resume_finishes_it(tmp_path):
    """SIGINT (Ctrl-C) mid-study: Tune stops, the queued writes land, the RUNNING trial and
    the configuration asked ahead become FAIL, exit code 130; launching again finishes."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = (
        "--sampler random --sampler-seed 0 --trials 4 --norms none,l2 --epochs 8 "
        "--batch-size 8 --max-concurrent 1 --fuse 1"
    ).split()
    command = helpers.launch_command(url, "ctrlc", tmp_path / "ray", *study)
    driver = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the study never got going"
            try:
                rows = helpers.trials(url, "ctrlc")
            except Exception:  # noqa: BLE001 - the tables may not exist yet
                rows = []
            running = [r for r in rows if r.state == "RUNNING" and 1 <= r.epochs_completed <= 5]
            if any(r.state == "COMPLETE" for r in rows) and running:
                break
            time.sleep(0.05)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    assert driver.returncode == 130, out + err
    assert "interrupted" in out and "Traceback" not in err, out + err
    rows = helpers.trials(url, "ctrlc")
    assert rows and not [r for r in rows if r.state == "RUNNING"]
    assert [r for r in rows if r.state == "FAIL"], "the interrupted trial is not FAIL"
    states = [t.state for t in helpers.optuna_trials(url, "ctrlc")]
    assert optuna.trial.TrialState.RUNNING not in states  # the asked-ahead one included
    assert optuna.trial.TrialState.WAITING not in states

    again = subprocess.run(  # the same command again, as the interrupted launch says
        command, cwd=REPO, capture_output=True, text=True, timeout=400
    )
    assert again.returncode == 0, again.stdout + again.stderr
    rows = helpers.trials(url, "ctrlc")
    assert sum(r.state == "COMPLETE" for r in rows) == 4
    assert len({r.trial_number for r in rows}) == len(rows)
    states = [t.state for t in helpers.optuna_trials(url, "ctrlc")]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert optuna.trial.TrialState.RUNNING not in states
