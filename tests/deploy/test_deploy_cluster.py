"""A study submitted as a Ray job to a real two-node cluster with token authentication.

The cluster is two network namespaces on this machine (tests/study/cluster_helpers.py,
docs/cluster-tests.md); here the head also runs Ray's dashboard, i.e. the job
server, and only the head's environment names the writer's database URL file, as in every
recipe. The study goes through `ray job submit --working-dir` exactly as deploy/README.md
shows, and writes through the least-privilege writer role on the real PostgreSQL (reached
from inside the namespaces through its Unix socket: nothing leaves the machine). Checked:
the trials ran on both nodes; the writer's password never shows in any process's command
line or environment, in the job's output, in Ray's logs or results, in the database or in
the report; and the job server refuses a client without the token or with a wrong one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
STUDY_TESTS = ROOT / "tests" / "study"
DASHBOARD_PORT = 8265
STUDY = "deploy-job"

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.postgres]


def _helpers() -> SimpleNamespace:
    """tests/study/cluster_helpers (tests/conftest.py puts its folder on sys.path)."""
    if str(STUDY_TESTS) not in sys.path:
        sys.path.insert(0, str(STUDY_TESTS))
    import cluster_helpers

    reason = cluster_helpers.can_build_namespaces()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the cluster test must run under CI=true: {reason}")
        pytest.skip(reason)
    return SimpleNamespace(module=cluster_helpers)


@contextmanager
def job_cluster(head_env: dict[str, str]) -> Iterator[object]:
    """cluster_helpers.ray_cluster with the head running the dashboard (Ray's job server)
    on its address and `head_env` on top of the cluster's environment (not the worker's).

    Namespaces, addresses, token, per-node temp dirs and teardown (by process id, never
    `ray stop`) are the helper's own.
    """
    with _helpers().module.ray_cluster(dashboard_port=DASHBOARD_PORT, head_env=head_env) as c:
        yield c


class SecretWatch:
    """Scans every process's command line and environment for `secret` while running."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.hits: list[str] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SecretWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(0.5)

    def selftest(self) -> None:
        """The scan finds the secret in a process's environment (so an empty result means
        something), then forgets that hit."""
        probe = subprocess.Popen(["sleep", "30"], env={"PROBE": self.secret.decode()})
        try:
            # Popen returns once exec has begun, but the kernel publishes the new
            # environment a moment later (empty /proc/PID/environ in between): poll.
            deadline = time.monotonic() + 10
            while True:
                self.scan()
                if any(f"pid {probe.pid} environ" in hit for hit in self.hits):
                    break
                assert time.monotonic() < deadline, self.hits
                time.sleep(0.05)
        finally:
            probe.kill()
            probe.wait()
        self.hits.clear()

    def scan(self) -> None:
        me = str(os.getpid())
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or entry == me:
                continue  # pytest itself holds the password (it made the file)
            for part in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{entry}/{part}").read_bytes()
                except OSError:
                    continue
                if self.secret in data:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()[:200]
                    self.hits.append(f"pid {entry} {part}: {cmd!r}")
        self.scans += 1


def _socket_dir(admin_url: str) -> str:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            dirs = conn.execute(sa.text("SHOW unix_socket_directories")).scalar() or ""
    finally:
        engine.dispose()
    for candidate in (d.strip() for d in dirs.split(",")):
        if candidate.startswith("/") and Path(candidate).is_dir():
            return candidate
    pytest.skip("PostgreSQL has no Unix socket the namespaces could reach")
    raise AssertionError  # unreachable


def _in_head(
    cluster: object,
    argv: Sequence[str],
    env: dict[str, str],
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    command = [
        "ip",
        "netns",
        "exec",
        cluster.head_ns,
        "env",
        "-i",
        *[f"{k}={v}" for k, v in env.items()],
        *argv,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _node_ips(cluster: object, job_server: str, env: dict[str, str]) -> dict[str, str]:
    """Node id -> node address of the live nodes, from Ray's state API (token required)."""
    proc = _in_head(
        cluster, ["ray", "list", "nodes", "--format", "json", "--address", job_server], env, 120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {n["node_id"]: n["node_ip"] for n in json.loads(proc.stdout) if n["state"] == "ALIVE"}


def _files_containing(root: Path, secret: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found.append(str(path))
        except OSError:
            continue
    return found


def _database_text(admin_url: str) -> str:
    """Every row of every table in the study's database, as text."""
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            tables = (
                conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
                .scalars()
                .all()
            )
            return "\n".join(
                str(conn.execute(sa.text(f'SELECT * FROM "{t}"')).all()) for t in tables
            )
    finally:
        engine.dispose()


def test_study_submitted_as_a_ray_job_runs_on_both_nodes_without_leaking_the_password(
    pg_roles: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _helpers()
    url = make_url(pg_roles.writer_url).set(
        host="localhost", port=None, query={"host": _socket_dir(pg_roles.admin_url)}
    )
    url_file = tmp_path / "writer_db_url"
    url_file.write_text(url.render_as_string(hide_password=False))
    url_file.chmod(0o600)
    results = tmp_path / "ray-results"
    secret = pg_roles.writer_password
    submission = f"deploy-test-{uuid.uuid4().hex[:8]}"

    watch = SecretWatch(secret)
    watch.selftest()
    with job_cluster({"INSGD_STORAGE_FILE": str(url_file)}) as cluster, watch:
        job_server = f"http://{cluster.head_ip}:{DASHBOARD_PORT}"
        client_env = {k: v for k, v in cluster.env.items() if k != "HOME"}
        client_env["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token to fall back on
        (tmp_path / "home").mkdir()

        # Ray's token authentication: no token, a wrong token, the right one.
        no_token = {
            k: v for k, v in client_env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")
        }
        denied = _in_head(cluster, ["ray", "job", "list", "--address", job_server], no_token, 120)
        assert denied.returncode != 0 and "Missing authentication token" in denied.stderr
        wrong = _in_head(
            cluster,
            ["ray", "job", "list", "--address", job_server],
            {**client_env, "RAY_AUTH_TOKEN": "0" * 32},
            120,
        )
        assert wrong.returncode != 0 and "Invalid authentication token" in wrong.stderr

        # A driver joining directly (launch --address) without the token: refused, exit 2.
        # It mostly waits on Ray's connection retries, so it runs beside the job below.
        tokenless = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                cluster.head_ns,
                "env",
                "-i",
                *[f"{k}={v}" for k, v in no_token.items()],
                "insgd-study",
                "launch",
                "--address",
                cluster.address,
                "--name",
                "denied",
                "--dataset",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--storage",
                f"sqlite:///{tmp_path / 'denied.db'}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )

        # The README's command: ray job submit --runtime-env ... --working-dir . -- launch
        submit = _in_head(
            cluster,
            [
                "ray",
                "job",
                "submit",
                "--address",
                job_server,
                "--submission-id",
                submission,
                "--runtime-env",
                "deploy/ray/job-runtime-env.yaml",
                "--working-dir",
                ".",
                "--",
                "insgd-study",
                "launch",
                "--name",
                STUDY,
                "--dataset",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--norms",
                "none",
                "--lr-points",
                "2",
                "--cpus-per-trial",
                "1",
                "--results-dir",
                str(results),
            ],
            client_env,
            420,
        )
        output = submit.stdout + submit.stderr
        assert submit.returncode == 0, output[-4000:]
        assert f"Job '{submission}' succeeded" in output, output[-2000:]

        listed = _in_head(cluster, ["ray", "job", "list", "--address", job_server], client_env, 120)
        assert listed.returncode == 0 and submission in listed.stdout, listed.stderr[-1000:]
        logs = _in_head(
            cluster, ["ray", "job", "logs", "--address", job_server, submission], client_env, 120
        )
        assert f"study '{STUDY}'" in logs.stdout, logs.stdout[-2000:]
        nodes = _node_ips(cluster, job_server, client_env)
        _, tokenless_err = tokenless.communicate(timeout=300)
        assert tokenless.returncode == 2, tokenless_err[-2000:]
        # One line, naming what to set: Ray's C++ client's own retry warnings are held back.
        lines = tokenless_err.strip().splitlines()
        assert len(lines) == 1, tokenless_err[-2000:]
        assert lines[0].startswith(
            f"insgd-study launch: error: cannot join the Ray cluster at {cluster.address}"
        ), lines
        assert "RAY_AUTH_MODE=token" in lines[0], lines
        watch.scan()
        ray_files = _files_containing(cluster.temp_dir, secret.encode())

    # Both nodes ran trials, all written through the writer role.
    engine = sa.create_engine(pg_roles.admin_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT t.state, t.node_id FROM insgd_trials t JOIN insgd_studies s "
                    "ON s.id = t.study_id WHERE s.name = :n"
                ),
                {"n": STUDY},
            ).all()
            owner = conn.execute(
                sa.text("SELECT tableowner FROM pg_tables WHERE tablename = 'insgd_trials'")
            ).scalar()
    finally:
        engine.dispose()
    # two trials, one CPU per node and per trial: they ran at once, so on different nodes
    assert len(rows) == 2 and {r.state for r in rows} == {"COMPLETE"}, rows
    assert {nodes[r.node_id] for r in rows} == {cluster.head_ip, cluster.worker_ip}
    assert owner == pg_roles.writer

    # The password went nowhere but the file it came from.
    assert watch.scans >= 3 and watch.hits == [], watch.hits
    assert secret not in output + listed.stdout + logs.stdout + logs.stderr
    assert ray_files == []
    # in the test's folder (Tune's results and checkpoints included) only the URL file has it
    assert _files_containing(tmp_path, secret.encode()) == [str(url_file)]
    assert secret not in _database_text(pg_roles.admin_url)

    from study.cli import main

    reader_file = tmp_path / "reader_db_url"
    reader_file.write_text(pg_roles.reader_url)
    monkeypatch.delenv("INSGD_STORAGE", raising=False)
    monkeypatch.setenv("INSGD_STORAGE_FILE", str(reader_file))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["report", "--study", STUDY, "--format", "json", "--no-attach"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) and secret not in out + err and pg_roles.reader_password not in out
