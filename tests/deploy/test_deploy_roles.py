"""deploy/postgres/roles.sql on the real PostgreSQL: the driver writes through insgd_writer;
query, report and the dashboard work through insgd_reader, which cannot write anything.

Every test creates its own uniquely named role pair (tests/deploy/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
INIT_ROLES = ROOT / "deploy" / "postgres" / "init-roles.sh"
STUDY = "roles-demo"

pytestmark = pytest.mark.postgres


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether a pg_authid SCRAM-SHA-256 verifier was made from `password` (RFC 5803)."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, _server_key = keys.split(":")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == (
        base64.b64decode(stored_key)
    )


def _password_verifier(admin_url: str, role: str) -> str | None:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}
            ).scalar()
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ roles.sql
def test_roles_sql_sets_passwords_privileges_and_is_idempotent(
    pg_roles: SimpleNamespace, roles_sql: SimpleNamespace
) -> None:
    for role, password in (
        (pg_roles.writer, pg_roles.writer_password),
        (pg_roles.reader, pg_roles.reader_password),
    ):
        assert _scram_matches(_password_verifier(pg_roles.admin_url, role), password)
    assert pg_roles.writer_password not in pg_roles.psql_output

    again = roles_sql.run(
        pg_roles.admin_url,
        {"dbname": pg_roles.db, "writer": pg_roles.writer, "reader": pg_roles.reader},
    )
    assert again.returncode == 0, again.stderr
    # without INSGD_*_PASSWORD the passwords are left as they were
    assert _scram_matches(
        _password_verifier(pg_roles.admin_url, pg_roles.writer), pg_roles.writer_password
    )

    engine = sa.create_engine(pg_roles.admin_url)
    try:
        with engine.connect() as conn:
            public = conn.execute(
                sa.text(
                    "SELECT array_agg(a.privilege_type) FROM pg_database d, "
                    "aclexplode(d.datacl) a WHERE d.datname = :db AND a.grantee = 0"
                ),
                {"db": pg_roles.db},
            ).scalar()
            assert not public, f"PUBLIC keeps {public} on the database"
            flags = conn.execute(
                sa.text(
                    "SELECT rolname, rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls "
                    "FROM pg_roles WHERE rolname IN (:w, :r)"
                ),
                {"w": pg_roles.writer, "r": pg_roles.reader},
            ).all()
            assert sorted(f for _, f in flags) == [False, False]
            settings = conn.execute(
                sa.text(
                    "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r "
                    "ON r.oid = s.setrole WHERE r.rolname = :r"
                ),
                {"r": pg_roles.reader},
            ).scalar()
            assert settings == ["default_transaction_read_only=on"]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, "pass the results database with -v dbname=NAME"),
        ({"writer": "postgres"}, "writer and reader must be two roles other than"),
    ],
)
def test_roles_sql_refuses_bad_variables(
    postgres_url: str, roles_sql: SimpleNamespace, variables: dict[str, str], message: str
) -> None:
    if variables:
        variables = {
            "dbname": make_url(postgres_url).database,
            **variables,
            "reader": f"insgd_r_{uuid.uuid4().hex[:8]}",
        }
    proc = roles_sql.run(postgres_url, variables)
    assert proc.returncode != 0 and message in proc.stderr
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                ).scalar()
                is True
            )
    finally:
        engine.dispose()


def test_container_init_script_applies_roles_sql_with_password_files(
    postgres_url: str, roles_sql: SimpleNamespace, tmp_path: Path
) -> None:
    """deploy/postgres/init-roles.sh as the postgres image (compose, KubeRay) runs it."""
    roles_sql.psql()
    tag = uuid.uuid4().hex[:10]
    writer, reader = f"insgd_w_{tag}", f"insgd_r_{tag}"
    (tmp_path / "w").write_text("writer-" + tag)
    (tmp_path / "r").write_text("reader-" + tag)
    env = {
        **roles_sql.admin_env(postgres_url),
        "POSTGRES_USER": make_url(postgres_url).username or "postgres",
        "POSTGRES_DB": make_url(postgres_url).database,
        "INSGD_ROLES_SQL": str(roles_sql.path),
        "INSGD_WRITER_ROLE": writer,
        "INSGD_READER_ROLE": reader,
        "INSGD_WRITER_PASSWORD_FILE": str(tmp_path / "w"),
        "INSGD_READER_PASSWORD_FILE": str(tmp_path / "r"),
    }
    try:
        proc = subprocess.run(
            [str(INIT_ROLES)], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert _scram_matches(_password_verifier(postgres_url, writer), "writer-" + tag)
        assert _scram_matches(_password_verifier(postgres_url, reader), "reader-" + tag)
    finally:
        roles_sql.drop(postgres_url, writer, reader)


# ------------------------------------------------------------------------------ end to end
def _write_study_as(url: str) -> int:
    """A study's worth of writes: our schema (migrations), trials and epochs, Optuna's study."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from storage import ResultWriter, open_database

    writer = ResultWriter(open_database(url))
    writer.create_study(STUDY, {"sampler": "grid"}, code_version="deploy-test")
    trials = [(norm, lr) for norm in ("none", "l2") for lr in (0.01, 0.1, 1.0)]
    for number, (norm, lr) in enumerate(trials):
        accuracy = 0.5 + 0.1 * number
        fields = {
            "optimizer": "sgd" if norm == "none" else "insgd",
            "norm": norm,
            "lr": lr,
            "eps": None if norm == "none" else 0.01,
            "seed": 0,
            "model": "mlp",
            "dataset": "digits",
            "batch_size": 64,
            "epochs": 2,
        }
        writer.start_trial(STUDY, number, fields)
        curve = [
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "train_accuracy": accuracy,
                "val_loss": 1.0,
                "val_accuracy": accuracy * e / 2,
                "lr": lr,
                "epoch_seconds": 0.1,
                "images_per_second": 1000.0,
                "diverged": False,
            }
            for e in (1, 2)
        ]
        writer.finish_trial(STUDY, number, {**fields, "state": "COMPLETE"}, curve)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    dists = {
        "norm": CategoricalDistribution(["none", "l1", "l2"]),
        "lr": FloatDistribution(1e-3, 10.0, log=True),
    }
    for number, (norm, lr) in enumerate(trials):
        study.add_trial(
            optuna.trial.create_trial(
                params={"norm": norm, "lr": lr}, distributions=dists, value=0.5 + 0.1 * number
            )
        )
    storage.engine.dispose()
    return len(trials)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _request(url: str, method: str) -> int:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method=method), timeout=10
        ) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _reader_env(tmp_path: Path, reader_url: str) -> dict[str, str]:
    url_file = tmp_path / "reader_db_url"
    url_file.write_text(reader_url)
    url_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSGD_")}
    env["INSGD_STORAGE_FILE"] = str(url_file)
    return env


def test_reader_runs_query_report_dashboard_and_cannot_write(
    pg_roles: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from study.cli import main

    trials = _write_study_as(pg_roles.writer_url)
    env = _reader_env(tmp_path, pg_roles.reader_url)
    secrets = (pg_roles.reader_password, pg_roles.writer_password)
    for key in [k for k in os.environ if k.startswith("INSGD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("INSGD_STORAGE_FILE", env["INSGD_STORAGE_FILE"])
    monkeypatch.chdir(tmp_path)

    capsys.readouterr()
    assert main(["query", "--study", STUDY, "--format", "json"]) == 0
    query_out, query_err = capsys.readouterr()
    rows = json.loads(query_out)
    assert len(rows) == trials and {r["state"] for r in rows} == {"COMPLETE"}

    out = tmp_path / "report"
    code = main(["report", "--study", STUDY, "--out", str(out)])
    report_out, report_err = capsys.readouterr()
    assert code == 0, report_err
    # attaching the report to the Optuna study is a write: at most one warning line says so
    assert "Traceback" not in report_err and len(report_err.splitlines()) <= 1
    assert "sgd" in report_out and (out / "report.json").is_file()
    for text in [
        query_out,
        query_err,
        report_out,
        report_err,
        *(p.read_bytes().decode("latin-1") for p in out.iterdir()),
    ]:
        assert not any(s in text for s in secrets)

    port = _free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "study", "dashboard", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status, body = 0, b""
        while time.monotonic() < deadline and dashboard.poll() is None:
            try:
                status, body = _get(f"{base}/api/studies")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, (status, body[:300])
        (summary,) = json.loads(body)["study_summaries"]
        assert summary["study_name"] == STUDY
        status, body = _get(f"{base}/api/studies/{summary['study_id']}")
        assert status == 200 and len(json.loads(body)["trials"]) == trials
        # the dashboard's own write paths fail for the reader: nobody deletes a study by a click
        assert _request(f"{base}/api/studies/{summary['study_id']}", "DELETE") >= 400
    finally:
        dashboard.terminate()
        _, err = dashboard.communicate(timeout=30)
    assert not any(s in err for s in secrets)

    _assert_reader_cannot_write(pg_roles.reader_url)
    _assert_writer_cannot_administer(pg_roles.writer_url)
    engine = sa.create_engine(pg_roles.admin_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM insgd_trials")).scalar() == trials
            assert conn.execute(sa.text("SELECT count(*) FROM studies")).scalar() == 1
    finally:
        engine.dispose()


WRITES = (
    "INSERT INTO insgd_studies (name, created_at, config, code_version) "
    "VALUES ('x', now(), '{}', 'x')",
    "UPDATE insgd_trials SET lr = 1",
    "DELETE FROM insgd_epochs",
    "INSERT INTO studies (study_name) VALUES ('x')",  # Optuna's own tables
    "DELETE FROM trials",
    "CREATE TABLE insgd_intruder (i int)",
    "CREATE TEMP TABLE insgd_intruder (i int)",
    "ALTER TABLE insgd_trials ADD COLUMN intruder int",
    "DROP TABLE insgd_epochs",
    "TRUNCATE insgd_epochs",
)


def _assert_reader_cannot_write(reader_url: str) -> None:
    engine = sa.create_engine(reader_url)
    try:
        for read_only in ("on", "off"):  # "off": the reader lifting its own default
            for statement in WRITES:
                with engine.connect() as conn:
                    conn.execute(sa.text(f"SET default_transaction_read_only = {read_only}"))
                    conn.commit()
                    with pytest.raises(sa.exc.DBAPIError) as info:
                        conn.execute(sa.text(statement))
                    message = str(info.value.orig)
                    expected = (
                        "read-only transaction"
                        if read_only == "on"
                        else ("permission denied", "must be owner")
                    )
                    assert any(
                        e in message
                        for e in ((expected,) if isinstance(expected, str) else expected)
                    ), message
                    conn.rollback()
    finally:
        engine.dispose()


def _assert_writer_cannot_administer(writer_url: str) -> None:
    engine = sa.create_engine(writer_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in ("CREATE DATABASE insgd_intruder", "CREATE ROLE insgd_intruder"):
                with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
                    conn.execute(sa.text(statement))
    finally:
        engine.dispose()
