"""optuna-dashboard on the study database, and the report attached to the Optuna study.

The dashboard reads Optuna's own tables in the same database our results live
in, so a user sees Optuna's slice/contour/importance plots there; attaching the
robustness report (a Markdown note and the figures as artifacts) puts our
analysis on the same page. Artifacts go to a `FileSystemArtifactStore`: next to
a SQLite file by default (`<db dir>/artifacts`), `./artifacts` for a server
database, or wherever `$INSGD_ARTIFACT_DIR` / `--artifact-dir` says; the
dashboard must be started with the same directory to show them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from study.analysis.optuna_study import open_optuna_study, optuna_study_exists, optuna_url
from study.errors import UsageError

ARTIFACT_ENV = "INSGD_ARTIFACT_DIR"
ATTACHED_SUFFIXES = (".png", ".html", ".json")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def default_artifact_dir(url: str) -> Path:
    """`$INSGD_ARTIFACT_DIR`, else `<db dir>/artifacts` for a SQLite file, else ./artifacts."""
    env = os.environ.get(ARTIFACT_ENV)
    if env:
        return Path(env)
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by storage later
        return Path("artifacts")
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).expanduser().resolve().parent / "artifacts"
    return Path("artifacts")


def attach_report_to_optuna(
    url: str,
    study_name: str,
    report: Any,
    figures_dir: Path | str | None,
    *,
    artifact_dir: Path | str | None = None,
) -> list[str]:
    """Attach `report` (a `RobustnessReport`) to the Optuna study `study_name` at `url`.

    The note (Markdown) replaces the study's note; every PNG/HTML/JSON file in
    `figures_dir` is uploaded as a study artifact, replacing a previous artifact
    of the same file name so that re-running `report` does not pile up copies.
    Returns the attached file names; raises `UsageError` if there is no Optuna
    study of that name.
    """
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact
    from optuna_dashboard import save_note

    from study.analysis.report import render_markdown

    if not optuna_study_exists(url, study_name):
        raise UsageError(f"no Optuna study named {study_name!r} to attach the report to")
    files = []
    if figures_dir is not None:
        files = sorted(
            p for p in Path(figures_dir).iterdir() if p.is_file() and p.suffix in ATTACHED_SUFFIXES
        )
    store_dir = Path(artifact_dir) if artifact_dir is not None else default_artifact_dir(url)
    store = FileSystemArtifactStore(store_dir)
    with open_optuna_study(url, study_name) as study:
        if files:
            store_dir.mkdir(parents=True, exist_ok=True)
            _remove_artifacts(study, store, {p.name for p in files})
            for path in files:
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
        save_note(study, render_markdown(report, [p.name for p in files]))
    return [p.name for p in files]


def _remove_artifacts(study: Any, store: Any, filenames: set[str]) -> None:
    """Drop the study's artifacts with these file names (as optuna-dashboard's delete does)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    from study.search.optuna_private import ARTIFACTS_ATTR_PREFIX

    storage = study._storage
    for key, value in storage.get_study_system_attrs(study._study_id).items():
        if not key.startswith(ARTIFACTS_ATTR_PREFIX):
            continue
        meta = json.loads(value) if isinstance(value, str) else value
        if not meta or meta.get("filename") not in filenames:
            continue
        try:
            store.remove(meta["artifact_id"])
        except ArtifactNotFound:
            pass
        storage.set_study_system_attr(study._study_id, key, json.dumps(None))


def study_artifacts(url: str, study_name: str) -> list[dict[str, Any]]:
    """The live (not deleted) artifacts of the Optuna study: [{artifact_id, filename, ...}]."""
    from study.search.optuna_private import ARTIFACTS_ATTR_PREFIX

    with open_optuna_study(url, study_name) as study:
        attrs = study._storage.get_study_system_attrs(study._study_id)
    metas = [json.loads(v) for k, v in attrs.items() if k.startswith(ARTIFACTS_ATTR_PREFIX)]
    return [m for m in metas if m]


def publish_report(
    url: str,
    study_name: str,
    *,
    tolerance: float | None = None,
    bins: int | None = None,
    artifact_dir: Path | str | None = None,
) -> list[str]:
    """Build the study's report, render it and attach it: what `launch` calls at the end.

    Returns the attached file names ([] when the database has no Optuna study of
    that name). Raises `UsageError` when the study has no COMPLETE trial, and
    `StorageError` for database trouble: a caller that must not fail on the
    report (the end of a long study) catches both and prints one line.
    """
    from study.analysis.options import DEFAULT_BINS, DEFAULT_TOLERANCE
    from study.analysis.robustness import build_report

    if not optuna_study_exists(url, study_name):
        return []
    report = build_report(
        url,
        study_name,
        tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
        bins=DEFAULT_BINS if bins is None else bins,
    )
    with tempfile.TemporaryDirectory(prefix="insgd-report-") as tmp:
        write_report_files(report, Path(tmp))
        return attach_report_to_optuna(url, study_name, report, tmp, artifact_dir=artifact_dir)


def write_report_files(report: Any, out_dir: Path) -> dict[str, Path]:
    """Figures, `report.html` and `report.json` into `out_dir`; returns the figures."""
    from study.analysis.plots import render_figures
    from study.analysis.report import render_html, report_json

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = render_figures(report.analysis, report.curves, out_dir, title=report.study)
    (out_dir / "report.html").write_text(render_html(report, figures), encoding="utf-8")
    (out_dir / "report.json").write_text(
        json.dumps(report_json(report, figures), indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    return figures


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


#: Hosts that mean "every address of this machine": the dashboard then answers any Host.
ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK_NAMES = {"127.0.0.1": ("localhost",), "::1": ("localhost",), "localhost": ("127.0.0.1",)}


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The `Host:` header values the dashboard answers when started on `host`:`port`, or
    None (any) for a wildcard address.

    optuna-dashboard has no authentication and can delete studies. A web page on another
    site can still make a browser send requests to 127.0.0.1 by pointing a host name of
    its own at it (DNS rebinding); such requests carry that name in `Host:`, which is what
    tells them apart. Besides the address itself, `localhost` is accepted for 127.0.0.1
    and ::1 (and 127.0.0.1 for localhost); the port may be left out only when it is 80.
    """
    if host.strip("[]") in ANY_ADDRESS:
        return None
    names = {host.strip("[]").lower(), *_LOOPBACK_NAMES.get(host.strip("[]").lower(), ())}
    allowed = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        allowed.add(f"{shown}:{port}")
        if port == 80:
            allowed.add(shown)
    return frozenset(allowed)


class HostGuard:
    """WSGI middleware: 403 for a request whose `Host:` header is not an allowed one."""

    def __init__(self, app: Any, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        host = str(environ.get("HTTP_HOST", "")).strip().lower()
        if self.allowed is None or host in self.allowed:
            return self.app(environ, start_response)
        body = (
            f"403 Forbidden: Host {host or '(none)'!r} is not this dashboard's address "
            f"({', '.join(sorted(self.allowed))})\n"
        ).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]


def make_dashboard_server(
    url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    artifact_dir: Path | str | None = None,
    quiet: bool = True,
) -> WSGIServer:
    """A ready-to-serve optuna-dashboard WSGI server on the study database.

    Binding happens here, so a port in use is a `UsageError` before anything is served.
    Requests whose `Host:` header is not `host`:port (or `localhost` for 127.0.0.1) get
    403 (`allowed_hosts`: DNS rebinding); a wildcard `host` (0.0.0.0, ::) answers any.
    """
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store_dir = Path(artifact_dir) if artifact_dir is not None else default_artifact_dir(url)
    app = wsgi(
        optuna.storages.RDBStorage(optuna_url(url)),
        artifact_store=FileSystemArtifactStore(store_dir),
    )
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        server = make_server(
            host,
            port,
            app,
            server_class=server_class,
            handler_class=_QuietHandler if quiet else WSGIRequestHandler,
        )
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.set_app(HostGuard(app, allowed_hosts(host, server.server_port)))
    store_dir.mkdir(parents=True, exist_ok=True)
    server.artifact_dir = store_dir  # type: ignore[attr-defined]
    return server


def serve(
    url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    artifact_dir: Path | str | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C); the caller has validated the database."""
    server = make_dashboard_server(url, host, port, artifact_dir=artifact_dir)
    from storage import mask_url

    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"optuna-dashboard on http://{shown}:{server.server_port}/dashboard "
        f"(storage {mask_url(url)}, artifacts {server.artifact_dir}); Ctrl-C to stop\n"  # type: ignore[attr-defined]
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(
            f"warning: listening on {host}, reachable from other machines; the dashboard "
            "has no authentication and can edit and delete studies\n"
        )
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
