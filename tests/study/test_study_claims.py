"""One launch at a time per study (`storage.claims`), through `insgd-study launch`.

- a study another launch is running (a live claim) refuses a second launch, with or
  without --resume: one line, exit code 2, before Ray starts or anything is written;
- a claim whose holder is gone is refused without --resume and taken over with it;
- two launches of one new study started at the same moment: one runs it, the other is
  refused before writing anything (real processes);
- a launch marks FAIL only the trials it ran itself.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
import study_helpers as helpers

import storage
from storage.claims import Holder, claim_study, read_claim
from storage.schema import utcnow
from study import cli

REPO = Path(__file__).resolve().parents[2]


def _elsewhere() -> Holder:
    return Holder(uuid.uuid4().hex, "other-host", 4242, "another-boot", 17)


@pytest.fixture
def no_ray(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a refused launch must not start Ray")

    monkeypatch.setattr("study.run.raysetup.ray_session", forbidden)


def _launch(capsys, url: str, *argv: str) -> tuple[int, str]:
    code = cli.main(["launch", "--storage", url, "--name", "s", *argv])
    return code, capsys.readouterr().err


def _refused(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_a_study_another_launch_runs_refuses_a_second_one(db_url, capsys, no_ray):
    engine = storage.open_database(db_url)
    try:
        other = claim_study(engine, "s", holder=_elsewhere())
        for argv in ((), ("--resume",)):
            code, err = _launch(capsys, db_url, "--epochs", "1", *argv)
            _refused(code, err, "study 's' in ")
            assert "is being run by another launch (pid 4242 on other-host" in err
        assert storage.ResultWriter(engine).get_study("s") is None  # nothing written
        assert read_claim(engine, "s").holder == other.holder  # and the claim untouched
    finally:
        storage.dispose_engines()


def test_a_claim_whose_holder_is_gone_needs_resume(db_url, capsys, no_ray):
    engine = storage.open_database(db_url)
    try:
        # the gone launch wrote its study (a claim with no study behind it is taken over
        # by any launch: test_the_claim_of_a_launch_that_is_gone_is_taken_over)
        storage.ResultWriter(engine).create_study("s", {"x": 1}, "gone")
        claim_study(engine, "s", holder=_elsewhere(), now=utcnow() - timedelta(hours=1))
        code, err = _launch(capsys, db_url)
        _refused(code, err, "was claimed by a launch that is gone")
        assert "pass --resume to take the study over" in err
        assert storage.ResultWriter(engine).get_study("s").config == {"x": 1}
        # a bad --resume is still refused as bad input, and gives the claim back
        code, err = _launch(capsys, db_url, "--resume", "--epochs", "0")
        _refused(code, err, "--epochs must be an integer >= 1")
        stored = read_claim(engine, "s")
        assert stored is not None and stored.holder.host == "other-host"
    finally:
        storage.dispose_engines()


def test_a_launch_marks_fail_only_its_own_trials(sqlite_url):
    engine = storage.open_database(sqlite_url)
    try:
        writer = storage.ResultWriter(engine)
        writer.create_study("s", {"x": 1}, "test")
        for number in range(4):
            writer.start_trial("s", number, {"norm": "l2", "lr": 0.1, "seed": 0})
        assert writer.fail_running_trials("s", "ended", from_number=2) == [2, 3]
        states = {r.trial_number: r.state for r in storage.queries.list_trials(engine, "s")}
        assert states == {0: "RUNNING", 1: "RUNNING", 2: "FAIL", 3: "FAIL"}
    finally:
        storage.dispose_engines()


STUDY = "--norms none,l2 --lr-points 2 --epochs 2 --batch-size 16 --max-concurrent 1".split()


def _command(url: str, tmp_path: Path, tag: str, *extra: str) -> list[str]:
    return helpers.launch_command(url, "s", tmp_path / f"ray-{tag}", *STUDY, *extra)


@pytest.mark.slow
def test_two_launches_of_one_new_study_at_the_same_moment(tmp_path, db_url):
    url = db_url
    launches = [
        subprocess.Popen(
            _command(url, tmp_path, tag),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for tag in ("a", "b")
    ]
    try:
        results = [(p.wait(timeout=400), *p.communicate()) for p in launches]
    finally:
        for p in launches:
            if p.poll() is None:
                p.kill()
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    ran = next(r for r in results if r[0] == 0)
    refused = next(r for r in results if r[0] == 2)
    lines = refused[2].strip().splitlines()
    assert len(lines) == 1 and "is being run by another launch" in lines[0], refused
    assert refused[1] == ""  # it said nothing else, and wrote nothing
    assert "4/4 trials finished" in ran[1]
    rows = helpers.trials(url, "s")
    assert sorted(r.trial_number for r in rows) == [0, 1, 2, 3]
    assert all(r.state == "COMPLETE" for r in rows)
    states = [t.state for t in helpers.optuna_trials(url, "s")]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4
    engine = storage.open_database(url)
    assert read_claim(engine, "s") is None  # given back at the end
    storage.dispose_engines()


@pytest.mark.slow
def test_the_claim_of_a_launch_that_is_gone_is_taken_over(tmp_path):
    """A launch that died before writing its study left only its claim: `--resume` has no
    study to continue (one line, exit 2), and the same launch again takes the claim over."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    engine = storage.open_database(url)
    gone = _elsewhere()
    claim_study(engine, "s", holder=gone, now=utcnow() - timedelta(hours=1))
    storage.dispose_engines()
    refused = subprocess.run(
        _command(url, tmp_path, "a", "--resume"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert refused.returncode == 2 and "--resume: there is no study 's'" in refused.stderr
    assert refused.stderr.count("\n") == 1
    proc = subprocess.run(
        _command(url, tmp_path, "a"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "took over from a launch that is gone (pid 4242 on other-host" in proc.stdout
    assert "4/4 trials finished" in proc.stdout
    engine = storage.open_database(url)
    assert read_claim(engine, "s") is None
    storage.dispose_engines()
