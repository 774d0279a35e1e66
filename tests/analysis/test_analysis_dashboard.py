"""`insgd-study dashboard`: serves the study (HTTP API and, in headless Chromium, the page)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from study.cli import main

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--virtual-time-budget=5000",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - localhost only
        return response.read()


def _wait_for(proc: subprocess.Popen, url: str, deadline_s: float = 60.0) -> bytes:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            return _get(url, timeout=2.0)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"dashboard did not answer {url} within {deadline_s} s")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is required (apt-get install -y chromium)")
    return path


def test_dashboard_lists_the_study_and_chromium_shows_it_with_the_report(tmp_path, capsys, data):
    url = f"sqlite:///{tmp_path}/studies.db"
    data.write_study(url, data.STUDY, data.known_trials())
    assert main(["report", "--storage", url, "--study", data.STUDY]) == 0
    capsys.readouterr()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "study", "dashboard", "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        studies = json.loads(_wait_for(proc, f"{base}/api/studies"))["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == data.STUDY]
        study_id = summary["study_id"]
        assert json.loads(_get(f"{base}/api/meta"))["artifact_is_available"] is True
        detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
        assert detail["note"]["body"].startswith("## Robustness to the learning rate")
        artifacts = {a["filename"]: a["artifact_id"] for a in detail["artifacts"]}
        assert "accuracy_vs_lr.png" in artifacts
        png = _get(f"{base}/artifacts/{study_id}/{artifacts['accuracy_vs_lr.png']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        dom = subprocess.run(
            [
                _chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'chrome'}",
                "--dump-dom",
                f"{base}/dashboard/studies/{study_id}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert f"{data.STUDY} (id={study_id})" in dom  # the page rendered this study
        assert "Study Artifacts" in dom and "accuracy_vs_lr.png" in dom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "optuna-dashboard on http://127.0.0.1:" in proc.stderr.read()


def test_the_server_binds_to_localhost_by_default(tmp_path, data):
    from study.analysis.dashboard import make_dashboard_server

    url = f"sqlite:///{tmp_path}/studies.db"
    data.write_study(url, "s", [data.trial_spec("l2", 0.1, 0, 0.5)])
    server = make_dashboard_server(url, port=0, artifact_dir=tmp_path / "art")
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert Path(server.artifact_dir) == tmp_path / "art"
    finally:
        server.server_close()


def test_bad_dashboard_arguments_are_one_line_exit_2(tmp_path, capsys, data):
    url = f"sqlite:///{tmp_path}/studies.db"
    data.write_study(url, "s", [data.trial_spec("l2", 0.1, 0, 0.5)])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        cases = [
            (["--port", "0"], "--port must be in 1..65535"),
            (["--port", "70000"], "--port must be in 1..65535"),
            (["--port", str(taken)], f"cannot listen on 127.0.0.1:{taken}"),
        ]
        for args, message in cases:
            assert main(["dashboard", "--storage", url, *args]) == 2
            out, err = capsys.readouterr()
            assert out == "" and err.count("\n") == 1 and message in err, err
    missing = tmp_path / "missing.db"
    assert main(["dashboard", "--storage", f"sqlite:///{missing}", "--port", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not missing.exists()


def _request(port: int, method: str, path: str, host: str | None) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:`port` with this `Host:` header (None: no header)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _serving(server):
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def test_requests_for_another_host_are_refused_dns_rebinding(tmp_path, data):
    """The real server over real HTTP: a page on evil.example.com whose name resolves to
    127.0.0.1 gets 403 for every request, DELETE included; the study survives."""
    from study.analysis.dashboard import make_dashboard_server

    url = f"sqlite:///{tmp_path}/studies.db"
    data.write_study(url, "s", [data.trial_spec("l2", 0.1, 0, 0.5)])
    server = make_dashboard_server(url, port=0, artifact_dir=tmp_path / "art")
    port = server.server_port
    thread = _serving(server)
    try:
        status, body = _request(port, "GET", "/api/studies", f"127.0.0.1:{port}")
        assert status == 200
        (study,) = json.loads(body)["study_summaries"]
        for host in (f"evil.example.com:{port}", "evil.example.com", f"127.0.0.1:{port + 1}",
                     "127.0.0.1", f"localhost.evil.example.com:{port}", None):  # fmt: skip
            status, body = _request(port, "DELETE", f"/api/studies/{study['study_id']}", host)
            assert status == 403, (host, status, body)
            assert b"not this dashboard's address" in body
            assert _request(port, "GET", "/api/studies", host)[0] == 403
        # the address it was started on, and localhost for 127.0.0.1 (any case)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
            status, body = _request(port, "GET", "/api/studies", host)
            assert status == 200, host
            assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["s"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_wildcard_address_answers_any_host_and_warns(tmp_path, data, capsys, monkeypatch):
    from study.analysis import dashboard

    url = f"sqlite:///{tmp_path}/studies.db"
    data.write_study(url, "s", [data.trial_spec("l2", 0.1, 0, 0.5)])
    servers = []
    real = dashboard.make_dashboard_server

    def keep(*args, **kwargs):
        servers.append(real(*args, **kwargs))
        servers[-1].serve_forever = lambda: None  # serve from the test's own thread
        return servers[-1]

    monkeypatch.setattr(dashboard, "make_dashboard_server", keep)
    dashboard.serve(url, "0.0.0.0", 0, artifact_dir=tmp_path / "art")  # returns at once
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    server = real(url, "0.0.0.0", 0, artifact_dir=tmp_path / "art")
    thread = _serving(server)
    try:
        assert _request(server.server_port, "GET", "/api/studies", "evil.example.com")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("127.0.0.1", 8080, {"127.0.0.1:8080", "localhost:8080"}),
        ("localhost", 8080, {"localhost:8080", "127.0.0.1:8080"}),
        ("::1", 9000, {"[::1]:9000", "localhost:9000"}),
        ("10.0.0.5", 80, {"10.0.0.5:80", "10.0.0.5"}),
        ("Box.Example", 8080, {"box.example:8080"}),
        ("0.0.0.0", 8080, None),
        ("::", 8080, None),
    ],
)
def test_allowed_hosts(host, port, allowed):
    from study.analysis.dashboard import allowed_hosts

    assert allowed_hosts(host, port) == (None if allowed is None else frozenset(allowed))
