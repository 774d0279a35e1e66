"""Every kind of bad input to `insgd-study launch`: one stderr line, exit 2, nothing written.

These run the real command line in-process (and one case as a subprocess) with Ray
forbidden: `ray_session` is replaced by a function that fails the test, so a case that
got as far as starting Ray would show up as a failure, not as a slow pass.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from study import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("bad input must be refused before Ray starts")

    monkeypatch.setattr("study.run.raysetup.ray_session", forbidden)
    yield
    assert gc.isenabled(), "a refused launch left the garbage collector paused"


def launch(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = cli.main(["launch", *argv])
    except SystemExit as exc:  # argparse's own errors (wrong flag types)
        code = int(exc.code)
    err = capsys.readouterr().err
    return code, err


def assert_refused(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--lr-min", "1", "--lr-max", "0.1"], ["--lr-min 1 is above --lr-max 0.1"]),
        (["--eps-min", "0.5", "--eps-max", "0.1"], ["--eps-min 0.5 is above --eps-max 0.1"]),
        (["--lr-min", "0"], ["--lr-min must be a positive number"]),
        (["--eps-max", "-1"], ["--eps-max must be a positive number"]),
        (["--epochs", "0"], ["--epochs must be an integer >= 1"]),
        (["--trials", "0"], ["--trials must be an integer >= 1"]),
        (["--seeds", "-2"], ["--seeds must be an integer >= 1"]),
        (["--lr-points", "0"], ["--lr-points must be an integer >= 1"]),
        (["--max-concurrent", "0"], ["--max-concurrent must be an integer >= 1"]),
        (["--cpus-per-trial", "0"], ["--cpus-per-trial must be a number > 0"]),
        (["--gpus-per-trial", "-1"], ["--gpus-per-trial must be a number >= 0"]),
        (["--sampler", "anneal"], ["--sampler must be one of tpe, random, qmc, grid"]),
        (["--scheduler", "pbt"], ["--scheduler must be one of fifo, asha"]),
        (["--norms", "none,l3"], ["unknown variant 'l3'"]),
        (
            ["--variants", "sgd,insgd-l2-frozen", "--norms", "none,l2"],
            ["--variants sgd,insgd-l2-frozen contradicts --norms none,l2", "give one of them"],
        ),
        (
            ["--variants", "sgd,insgd-l3"],
            [
                "--variants: unknown variant 'insgd-l3'; choose from sgd, insgd-l1, insgd-l2, "
                "insgd-l1-frozen, insgd-l2-frozen"
            ],
        ),
        (["--variants", "sgd,,insgd-l2"], ["--variants has an empty variant name"]),
        (["--dataset", "svhn"], ["unknown dataset 'svhn'"]),
        (["--model", "vgg11"], ["unknown model 'vgg11'"]),
        (["--preset", "nope"], ["unknown preset 'nope'", "default"]),
        (["--sampler", "grid", "--trials", "5"], ["--trials 5 contradicts the grid", "21"]),
        (["--sampler", "tpe"], ["--trials is required with --sampler tpe"]),
        (["--trials", "5", "--seeds", "2"], ["not a multiple of --seeds 2"]),
        (["--epochs", "ten"], ["--epochs", "invalid int value: 'ten'"]),
        (["--lr-max", "big"], ["--lr-max", "invalid float value: 'big'"]),
        (["--name", "a b"], ["--name must be"]),
        # numpy takes a seed in [0, 2**32 - 1]: refused before the study row is written
        (["--sampler-seed", "-1"], ["--sampler-seed must be an integer from 0 to 4294967295"]),
        (["--sampler-seed", str(2**32)], ["--sampler-seed must be an integer from 0 to"]),
        # the database's INTEGER columns are 32-bit
        (["--epochs", "99999999999999999999"], ["--epochs must be at most 2147483647"]),
        (["--trials", "3000000000"], ["--trials must be at most 2147483647"]),
        # a trial trains on one GPU; fractions pack trials on one
        (["--gpus-per-trial", "2"], ["--gpus-per-trial must be at most 1"]),
        (["--gpus-per-trial", "1.5"], ["--gpus-per-trial must be at most 1"]),
        (["--storage", "sqlite://"], ["in-memory SQLite database"]),
        (["--db-retry-seconds", "-1"], ["--db-retry-seconds must be a number from 0 to"]),
        (["--db-retry-seconds", "nan"], ["--db-retry-seconds must be a number from 0 to"]),
        (["--db-retry-seconds", "soon"], ["--db-retry-seconds", "invalid float value"]),
        # fused trials (--fuse K|auto)
        (["--fuse", "0"], ["--fuse must be an integer >= 1 or auto; got 0"]),
        (["--fuse", "-1"], ["--fuse must be an integer >= 1 or auto; got -1"]),
        (["--fuse", "x"], ["--fuse must be an integer >= 1 or auto; got 'x'"]),
        (["--fuse", "2.5"], ["--fuse must be an integer >= 1 or auto; got '2.5'"]),
        (["--fuse", "4", "--scheduler", "asha"], ["--fuse 4 with --scheduler asha"]),
        (
            ["--fuse", "4", "--trials", "4", "--scheduler", "asha"],
            ["--fuse 4 with --scheduler asha"],
        ),
    ],
)
def test_bad_flags(capsys, tmp_path, argv, needles):
    db = tmp_path / "studies.db"
    code, err = launch(capsys, "--storage", f"sqlite:///{db}", *argv)
    assert_refused(code, err, *needles)
    assert not db.exists()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('epochs = "ten"\n', ["epochs must be an integer; got str 'ten'"]),
        ("lr_min = true\n", ["lr_min must be a number; got bool True"]),
        ('norms = "none,l9"\n', ["unknown variant 'l9'"]),
        ("norms = 3\n", ["norms must be a list of variant names"]),
        (
            'variants = ["insgd-l2-frozen"]\nnorms = "l2"\n',
            ["variants insgd-l2-frozen contradicts"],
        ),
        ('variants = "sgd,frozen"\n', ["--variants: unknown variant 'frozen'; choose from sgd"]),
        ("variants = 3\n", ["variants must be a list of variant names"]),
        ("resume = 1\n", ["resume must be true or false"]),
        ('train = "fast"\n', ["train must be a table"]),
        ("[train]\nlr = 0.5\n", ["[train] must not set lr"]),
        ("learning_rate = 0.1\n", ["unknown key 'learning_rate'"]),
        ("epochs = = 3\n", ["malformed TOML"]),
        ("epochs = 3\n[train\n", ["malformed TOML"]),
        # numbers a setting cannot hold (an OverflowError after writing, before)
        ("epochs = 99999999999999999999\n", ["--epochs must be at most 2147483647"]),
        ("seeds = 2147483648\n", ["--seeds must be at most 2147483647"]),
        ("sampler_seed = -1\n", ["--sampler-seed must be an integer from 0 to"]),
        ("max_concurrent = 99999999999999999999\n", ["--max-concurrent must be at most"]),
        (f"lr_max = 1{'0' * 400}\n", ["lr_max must be a number; got int"]),
        (f"[train]\nweight_decay = 1{'0' * 400}\n", ["[train]", "weight_decay"]),
        ("lr_max = inf\n", ["lr_max must be a number; got float inf"]),
        ('db_retry_seconds = "long"\n', ["db_retry_seconds must be a number; got str"]),
        ("db-retry-seconds = 1e6\n", ["--db-retry-seconds must be a number from 0 to 86400"]),
        ("fuse = 0\n", ["--fuse must be an integer >= 1 or auto; got 0"]),
        ('fuse = "many"\n', ["fuse must be an integer >= 1 or auto; got 'many'"]),
        ("fuse = 2.0\n", ["fuse must be an integer >= 1 or auto; got 2.0"]),
        # trials that cannot train fused: an explicit K > 1 is refused (auto runs them unfused)
        ("fuse = 4\n[train]\ncompile = true\n", ["--fuse 4: these trials cannot train fused"]),
    ],
)
def test_bad_toml(capsys, tmp_path, text, needles):
    db = tmp_path / "studies.db"
    path = tmp_path / "study.toml"
    path.write_text(text)
    code, err = launch(capsys, str(path), "--storage", f"sqlite:///{db}")
    assert_refused(code, err, *needles)
    assert not db.exists()


def test_missing_config_file(capsys, tmp_path):
    code, err = launch(
        capsys, str(tmp_path / "nope.toml"), "--storage", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert_refused(code, err, "config file not found", "nope.toml")
    assert not (tmp_path / "x.db").exists()


def test_unreachable_databases(capsys, tmp_path):
    code, err = launch(capsys, "--storage", "postgresql://postgres@127.0.0.1:1/nothing")
    assert_refused(code, err, "127.0.0.1:1")
    code, err = launch(capsys, "--storage", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert_refused(code, err, "no/such/dir")
    code, err = launch(capsys, "--storage", "mysql://x@y/z")
    assert_refused(code, err, "unsupported database URL scheme")
    assert not (tmp_path / "no").exists()


def test_missing_dataset_files(capsys, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    db = tmp_path / "x.db"
    code, err = launch(
        capsys,
        "--dataset",
        "cifar10",
        "--model",
        "toy-cnn",
        "--data-dir",
        str(empty),
        "--storage",
        f"sqlite:///{db}",
    )
    assert_refused(code, err, "cifar", str(empty))
    assert not db.exists()


def test_unreachable_ray_address(capsys, tmp_path):
    db = tmp_path / "x.db"
    code, err = launch(capsys, "--address", "127.0.0.1:1", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "cannot reach a Ray cluster at 127.0.0.1:1")
    code, err = launch(capsys, "--address", "nohost", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "--address must be HOST:PORT")
    assert not db.exists()


def test_existing_name_with_another_configuration(capsys, tmp_path):
    from study.config import merge

    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = storage.open_database(url)
    writer = storage.ResultWriter(engine)
    stored = merge(flags={"name": "s1", "epochs": 4}).config.study_dict()
    writer.create_study("s1", stored, "test")
    code, err = launch(capsys, "--storage", url, "--name", "s1", "--epochs", "5")
    assert_refused(
        code,
        err,
        "study 's1' already exists with a different configuration",
        "epochs: stored 4, given 5",
    )
    # with --resume the study continues as stored, so a flag contradicting it is refused too
    code, err = launch(capsys, "--storage", url, "--name", "s1", "--epochs", "5", "--resume")
    assert_refused(code, err, "--resume continues study 's1' as stored", "epochs")
    # a RUNNING trial means another launch may own the study: refused without --resume
    writer.start_trial("s1", 0, {"norm": "none", "lr": 0.1, "seed": 0})
    code, err = launch(capsys, "--storage", url, "--name", "s1", "--epochs", "4")
    assert_refused(code, err, "1 RUNNING trial", "--resume")
    assert writer.get_study("s1").config == stored
    assert [t.state for t in storage.queries.list_trials(engine, "s1")] == ["RUNNING"]


def test_refusal_as_a_real_process(tmp_path):
    """The console entry point: exit status 2, one line, no Ray, no database file."""
    db = tmp_path / "x.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "study",
            "launch",
            "--norms",
            "none,sgd",
            "--storage",
            f"sqlite:///{db}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "insgd-study launch: error: --norms: unknown variant 'sgd'; choose from none, l1, l2 "
        "('none' is the SGD baseline)"
    )
    assert proc.stdout == ""
    assert not db.exists()


def test_results_dir_that_is_a_file_or_unwritable(capsys, tmp_path, monkeypatch):
    db = tmp_path / "x.db"
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    code, err = launch(capsys, "--results-dir", str(afile), "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "--results-dir", "is a file, not a folder")
    code, err = launch(capsys, "--results-dir", str(afile / "sub"), "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "cannot be created", "is a file, not a folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    import os

    if os.access(locked, os.W_OK):  # root writes anywhere: deny it as the kernel would
        real = os.access
        monkeypatch.setattr(
            "study.run.preflight.os.access",
            lambda p, mode: False if str(p).startswith(str(locked)) else real(p, mode),
        )
    for target, needle in ((locked, "is not writable"), (locked / "new", "cannot be created")):
        code, err = launch(capsys, "--results-dir", str(target), "--storage", f"sqlite:///{db}")
        assert_refused(code, err, "--results-dir", needle)
    assert not db.exists()
    locked.chmod(0o755)


def test_gpus_or_cpus_this_machine_lacks_are_refused_before_the_database(
    capsys, tmp_path, monkeypatch
):
    """The launch starts its own Ray, sized to this machine: a trial it could never
    schedule is refused before the database file is created (not after Ray started)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("study.run.preflight.local_gpu_count", lambda: 0)
    db = tmp_path / "x.db"
    code, err = launch(capsys, "--gpus-per-trial", "1", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "a trial needs 1 CPU and 1 GPU", "has", "0 GPU")
    code, err = launch(capsys, "--gpus-per-trial", "0.5", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "0.5 GPU", "0 GPU")
    code, err = launch(capsys, "--cpus-per-trial", "100000", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "100000 CPU")
    assert not db.exists()


def test_local_resource_check_passes_what_the_machine_has(monkeypatch):
    from study.config import merge
    from study.run.preflight import check_local_resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("study.run.preflight.local_gpu_count", lambda: 1)
    check_local_resources(merge(flags={"gpus_per_trial": 1.0}).config)
    check_local_resources(merge(flags={"gpus_per_trial": 0.25}).config)
    monkeypatch.setattr("study.run.preflight.local_gpu_count", lambda: 0)
    # a cluster's resources are not this machine's: not checked here
    check_local_resources(merge(flags={"gpus_per_trial": 1.0, "address": "auto"}).config)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    check_local_resources(merge(flags={"gpus_per_trial": 1.0}).config)


def test_a_ray_that_cannot_be_joined_leaves_no_database(capsys, tmp_path, monkeypatch):
    """`--address auto` with no cluster (or a port that is not Ray's) fails only when Ray
    is joined: the new database is created after that, so nothing is left behind."""
    from contextlib import contextmanager

    from study.errors import UsageError

    @contextmanager
    def cannot_join(address, *, verbose=False):
        raise UsageError(f"cannot join the Ray cluster at {address}: no running Ray instance")
        yield  # pragma: no cover

    monkeypatch.setattr("study.run.raysetup.ray_session", cannot_join)
    db = tmp_path / "x.db"
    code, err = launch(capsys, "--address", "auto", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "cannot join the Ray cluster at auto")
    assert not db.exists()


def test_resume_of_a_study_that_does_not_exist_is_refused(capsys, tmp_path):
    db = tmp_path / "x.db"
    code, err = launch(capsys, "--resume", "--name", "TYPO", "--storage", f"sqlite:///{db}")
    assert_refused(code, err, "--resume: there is no study 'TYPO'", "drop --resume")
    assert not db.exists()
    from study.config import merge

    url = f"sqlite:///{db}"
    writer = storage.ResultWriter(storage.open_database(url))
    writer.create_study("real", merge(flags={"name": "real"}).config.study_dict(), "test")
    code, err = launch(capsys, "--resume", "--name", "TYPO", "--storage", url)
    assert_refused(code, err, "there is no study 'TYPO'")
    assert [s.name for s in storage.queries.list_studies(storage.open_database(url))] == ["real"]
