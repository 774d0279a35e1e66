"""`insgd-study query` and `insgd-study db`, through the real command-line entry point."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from storage import migrate, queries
from study.cli import main
from study.commands import query as query_command

CONTRACT = {"study", "trial_number", "state", "optimizer", "norm", "lr", "eps", "seed",
            "val_accuracy", "best_val_accuracy", "diverged", "stopped_early",
            "epochs_completed", "node_id", "hostname", "wall_seconds"}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch) -> None:
    monkeypatch.delenv("INSGD_STORAGE", raising=False)
    monkeypatch.delenv("INSGD_STORAGE_FILE", raising=False)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors (one line, via study.cli)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    storage.dispose_engines()
    return code, out, err


def _populate(url: str) -> None:
    writer = storage.ResultWriter(storage.open_database(url))
    writer.create_study("s", {"sampler": "grid"}, "v1")
    writer.create_study("t", {}, "v1")
    for n, (optimizer, norm, lr) in enumerate(
        [("sgd", None, 0.1), ("insgd", "l1", 0.1), ("insgd", "l2", 0.1), ("insgd", "l2", 1.0)]
    ):
        epochs = [{"epoch": e, "val_accuracy": 0.5 + n / 10 + e / 100} for e in range(2)]
        fields = {"optimizer": optimizer, "norm": norm, "lr": lr, "eps": 0.01, "seed": n,
                  "node_id": "abc", "hostname": "gpu1", "wall_seconds": 3.25}  # fmt: skip
        writer.finish_trial("s", n, fields, epochs)
    writer.finish_trial("t", 0, {"optimizer": "insgd", "norm": "l2", "lr": 0.5})
    storage.dispose_engines()


def test_query_json_csv_and_table(db_url: str, capsys) -> None:
    _populate(db_url)
    code, out, err = _run(
        capsys, "query", "--storage", db_url, "--study", "s", "--where", "norm=l2", "lr>=0.05",
        "--order-by", "lr:desc", "--format", "json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    records = json.loads(out)
    assert [(r["trial_number"], r["lr"]) for r in records] == [(3, 1.0), (2, 0.1)]
    for record in records:
        assert CONTRACT <= set(record)
        assert (record["study"], record["norm"], record["hostname"]) == ("s", "l2", "gpu1")
        assert record["val_accuracy"] == pytest.approx(0.5 + record["trial_number"] / 10 + 0.01)
        assert (record["diverged"], record["stopped_early"], record["epochs_completed"]) == (
            False,
            False,
            2,
        )

    code, out, _ = _run(capsys, "query", "--storage", db_url, "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 5
    assert list(table[0]) == list(queries.JSON_KEYS)
    assert (table[0]["study"], table[0]["norm"], table[0]["lr"]) == ("s", "none", "0.1")
    assert table[4]["val_accuracy"] == ""  # no epochs: an empty cell, not "None"

    code, out, _ = _run(
        capsys, "query", "--storage", db_url, "--where", "study=s", "state=COMPLETE"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:5] == ["study", "trial", "state", "opt", "norm"]
    assert set(lines[1]) == {"-", " "} and lines[-1] == "(4 trials)"
    assert lines[2].split()[:6] == ["s", "0", "COMPLETE", "sgd", "none", "0.1"]
    assert all(len(line.split()) == len(query_command.TABLE_COLUMNS) for line in lines[2:-1])


def _outdated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade_engine(storage.engine.get_engine(url), migrate.base_revision())
    return url


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "nope"], "no study named 'nope'"),
        (["--where", "colour=red"], "unknown column 'colour'"),
        (["--where", "lr=abc"], "lr takes a number, got 'abc'"),
        (["--where", "diverged=maybe"], "diverged takes true/false/1/0"),
        (["--where", "lr"], "expected KEY=VALUE"),
        (["--order-by", "colour"], "unknown column 'colour'"),
        (["--order-by", "lr:up"], "bad sort order 'lr:up'"),
        (["--limit", "many"], "argument --limit: invalid int value: 'many'"),
        (["--format", "xml"], "unknown --format 'xml'; choose from table, csv, json"),
        (["--storage", "mysql://u@h/db"], "unsupported database URL scheme 'mysql'"),
        (["--storage", "postgresql://postgres@127.0.0.1:1/test"], "cannot connect to"),
        (["--storage", "sqlite:///{tmp}/missing.db"], "no results database at"),
        (["--storage", "{outdated}"], "run `insgd-study db upgrade --storage sqlite:///"),
    ],
)
def test_query_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _populate(url)
    argv = [a.format(tmp=tmp_path, outdated=_outdated(tmp_path) if "{" in a else "") for a in argv]
    if "--storage" not in argv:
        argv = ["--storage", url, *argv]
    code, out, err = _run(capsys, "query", *argv)
    assert code == 2 and out == ""
    assert err.startswith("insgd-study query: error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "missing.db").exists()


def test_storage_flag_beats_environment_beats_default(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "db", "upgrade")
    assert code == 0 and out.startswith("sqlite:///studies.db: results schema (none) -> 0003")
    assert (tmp_path / "studies.db").exists()
    _populate(f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("INSGD_STORAGE", f"sqlite:///{tmp_path / 'env.db'}")
    assert len(json.loads(_run(capsys, "query", "--format", "json")[1])) == 5
    flag = ["--storage", "sqlite:///studies.db", "--format", "json"]
    assert json.loads(_run(capsys, "query", *flag)[1]) == []


def test_db_current_and_upgrade(tmp_path, capsys) -> None:
    url = _outdated(tmp_path)
    code, out, _ = _run(capsys, "db", "current", "--storage", url)
    head = migrate.head_revision()
    assert code == 0
    assert f"at 0001_base, this insgd-study needs {head}" in out
    assert f"run `insgd-study db upgrade --storage {url}`" in out
    assert _run(capsys, "db", "upgrade", "--storage", url)[1] == (
        f"{url}: results schema 0001_base -> {head}\n"
    )
    assert _run(capsys, "db", "current", "--storage", url)[1] == (
        f"{url}: results schema at {head} (up to date)\n"
    )
    assert "already at" in _run(capsys, "db", "upgrade", "--storage", url)[1]
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    code, out, err = _run(capsys, "db", "current", "--storage", missing)
    assert code == 2 and "no results database" in err and not (tmp_path / "missing.db").exists()


def test_db_upgrade_masks_the_password(postgres_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("INSGD_STORAGE", postgres_url.replace("postgres@", "postgres:topsecret@"))
    code, out, err = _run(capsys, "db", "upgrade")
    assert code == 0 and "postgres:***@" in out
    assert "topsecret" not in out + err


def test_the_help_lists_exactly_the_filter_columns() -> None:
    assert query_command.WHERE_HELP_COLUMNS.split() == list(queries.FILTER_COLUMNS)


def test_the_installed_command_exits_2_without_a_traceback(tmp_path) -> None:
    script = Path(sys.executable).with_name("insgd-study")
    result = subprocess.run(
        [str(script), "query", "--storage", "postgresql://u:topsecret@127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("insgd-study query: error: ")
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr
