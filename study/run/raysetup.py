"""Starting (or joining) Ray for a study, quietly.

Without ``--address`` a new local Ray starts sized to the machine (all its CPUs and GPUs),
with no dashboard, no worker output forwarded to the terminal and Ray's own logging at
WARNING, so the study's progress lines are all a person sees (``--verbose`` shows it all).
It is always a Ray of its own: plain ``ray.init()`` would join any cluster `ray start` left
running on the machine. With ``--address`` (or ``$RAY_ADDRESS``, which `ray job submit`
sets for its drivers) the driver joins that cluster; a host:port that does not answer is
reported in one line within seconds (`check_address`, called before anything is
written) instead of after Ray's long connection retries. An already initialised Ray (a
notebook, a test) is used as it is and left running.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from study.errors import UsageError

CONNECT_CHECK_TIMEOUT_S = 5.0

#: Environment that keeps Ray Tune's own output off the terminal (set before Tune imports).
QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # no "Configuration for experiment" box or status tables
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
_NOISY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "optuna")
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: Logs "Trial task failed for trial ..." at ERROR, with the exception's traceback.
TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"


class WorkerDeathFilter(logging.Filter):
    """Drops Tune's traceback for a trial whose worker died (a `RayActorError`, such as
    `ActorDiedError`): the study's progress already says it in one line ("worker failed
    ...; restarting from its epoch N checkpoint", or FAILED once --max-failures are
    spent). An error raised by the training code itself is kept. Not used with --verbose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        from ray.exceptions import RayActorError

        return not isinstance(error, RayActorError)


def quiet_environment(verbose: bool) -> None:
    """Silence Ray Tune and Optuna unless `verbose`; call before importing ray.tune."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    warnings.filterwarnings("ignore", module=r"optuna(\.|$)")


def silence_loggers(verbose: bool) -> None:
    """Ray and Optuna loggers to ERROR (after ray.init, which resets the 'ray' logger),
    and no traceback for a worker that died (`WorkerDeathFilter`)."""
    controller = logging.getLogger(TUNE_CONTROLLER_LOGGER)
    for existing in [f for f in controller.filters if isinstance(f, WorkerDeathFilter)]:
        controller.removeFilter(existing)
    if verbose:
        return
    controller.addFilter(WorkerDeathFilter())
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def check_address(address: str) -> None:
    """Fail fast (UsageError) when a host:port address does not accept connections."""
    if address == "auto" or "://" in address:
        return  # "auto" reads the local cluster file; ray:// goes through Ray Client
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--address must be HOST:PORT (or auto); got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_CHECK_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


@contextmanager
def _captured_stderr(*, enabled: bool) -> Iterator[io.StringIO]:
    """Hold back what Ray's C++ core writes straight to file descriptor 2 while joining.

    A refused connection (no or wrong token) makes it print a score of identical lines;
    the user gets one line from us instead. The text is kept so the caller can tell why.
    """
    captured = io.StringIO()
    if not enabled:
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.write(sink.read().decode(errors="replace"))
            captured.seek(0)


@contextmanager
def ray_session(address: str | None, *, verbose: bool = False) -> Iterator[dict[str, float]]:
    """Ray for the duration of a study; yields the cluster's resources (CPU, GPU, ...)."""
    import ray

    started_here = False
    if not ray.is_initialized():
        level = logging.INFO if verbose else logging.WARNING
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            with _captured_stderr(enabled=not verbose) as noise:
                try:
                    ray.init(address=address, log_to_driver=verbose, logging_level=level)
                except (ConnectionError, RuntimeError) as exc:
                    failure = " ".join(str(exc).split())
                else:
                    failure = None
            if failure is not None:
                if "token" in (failure + noise.read()).lower():
                    failure = (
                        "the cluster requires Ray token authentication: set "
                        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to "
                        "the head's token"
                    )
                raise UsageError(f"cannot join the Ray cluster at {address}: {failure}")
        else:
            if not verbose:
                # A new local cluster gets token auth by default; Ray says so in a warning.
                logging.getLogger(_AUTH_LOGGER).setLevel(logging.ERROR)
            # "local": a new Ray of our own, even if `ray start` left a cluster running here
            # (plain ray.init() would silently join that one).
            ray.init(
                address="local", include_dashboard=False, log_to_driver=verbose, logging_level=level
            )
        started_here = True
    silence_loggers(verbose)
    try:
        yield dict(ray.cluster_resources())
    finally:
        if started_here:
            ray.shutdown()
