"""The driver's database and Optuna calls, in order, on one background thread.

Tune runs every callback and searcher hook on the driver's event loop, so whatever they
do sits between one trial's report and the next trial's start. What a study does per
trial there (the results rows, Optuna's intermediate value, user attributes and tell:
tens of milliseconds on SQLite) need not finish before the next trial starts, only
before anything reads it back; so those calls run on one thread of their own while the
driver goes back to scheduling (it then idles in `ray.wait` with the GIL released).

Order keeps this correct:

- one thread, first in first out: a trial's start row is written before its epochs and
  its epochs before its end; Optuna's tell of a configuration comes before every later
  ask, so TPE sees exactly the history it would see with synchronous writes, and a
  seeded study samples the same configurations;
- asks go through the same queue and the searcher waits for their answer, so while a
  study runs Optuna is only ever called from this thread;
- `close()` drains the queue before the launch reads the database back (leftover
  RUNNING trials, summary, report).

Between one trial's last result and the next one's first task Tune's loop is on the
critical path: it ends the trial, makes the next one, resets the reused actor and sends
it its task, a string of calls into Ray that each need the GIL back when they return.
Work on this thread then (an ask, a tell, the rows: 10-30 ms of Python per trial) makes
each of those calls wait for the GIL, ~10 ms per trial on a 2-core machine. So the
`Recorder` *holds* the queue from a trial's last result (or its end, when a scheduler
stopped it) until the end of the Tune step that started the next trial, by which time
Tune has sent that trial its task (`hold`/`release`): queued calls wait, at most
`max_hold` seconds (50 ms), and run while the next trial trains. The driver never waits
on a held queue: `call`, and `wait` for a call that has not run yet, release it first.

Durability: a call waits in the queue for milliseconds. A driver killed with SIGKILL can
lose the last few, which ``--resume`` handles like any trial the dead driver left
RUNNING (marked FAIL, its configuration run again). The first error a queued call
raises is raised again in the driver at the next submit or at `close()`, so a database
that breaks mid-study still ends it with that error.

A database that is briefly away (a server restart, a lock held by another process) is
waited for inside the calls themselves (`storage.transactions.DbRetry`, bounded by
``--db-retry-seconds``): the queue then grows while trials train, and drains in order
once the database answers. A call that gives up raises `DatabaseUnavailable`; every
call queued after it is then not run but fails with that same error, so the database
holds a prefix of the study's writes and the driver stops within the bound, not one
bound per queued call (`fatal`). `stop` does the same for a launch that lost its
study's claim to another (`storage.claims`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from storage.errors import DatabaseUnavailable, StorageError

T = TypeVar("T")

#: How long a hold lasts at most (seconds): the queue's, and the Recorder's batch of rows.
MAX_HOLD = 0.05
#: A call running this long (seconds; writes take milliseconds) is waiting for the
#: database: `BackgroundWrites.stalled`.
STALLED_AFTER = 2.0


class Writes(Protocol):
    """Where the study's recorder and searcher send their database and Optuna calls."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...

    def wait(self, future: Future[T], timeout: float | None = None) -> T: ...

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def stalled(self) -> bool: ...


class InlineWrites:
    """Every call runs at once in the caller's thread (its error raised there): for tests
    and one-off use. Nothing is queued, so there is nothing to hold."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    def wait(self, future: Future[T], timeout: float | None = None) -> T:
        return future.result()

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    def stalled(self) -> bool:
        return False


class BackgroundWrites:
    """One worker thread running submitted calls in order; see the module docstring."""

    def __init__(self, max_hold: float = MAX_HOLD) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insgd-writes")
        self._pending: deque[Future[Any]] = deque()
        self._error: BaseException | None = None
        self._max_hold = max_hold
        self._open = threading.Event()
        self._open.set()
        self._held_until = 0.0
        self._fatal: StorageError | None = None
        self._running_since: float | None = None  # monotonic start of the running call

    @property
    def fatal(self) -> StorageError | None:
        """What stopped the writes: the error of the call that gave up waiting for the
        database, or the one given to `stop`; None while they go on."""
        return self._fatal

    def stop(self, error: StorageError) -> None:
        """From any thread: no queued or later call runs; each fails with `error`, which
        the driver gets at its next submit or wait (this launch lost its study's claim:
        `storage.claims`)."""
        if self._fatal is None:
            self._fatal = error

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; raises the error of an earlier call, if one failed."""
        self._raise_failed()
        future = self._executor.submit(self._run, fn, args, kwargs)
        self._pending.append(future)
        return future

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` after everything queued before it and return its result."""
        return self.wait(self.submit(fn, *args, **kwargs))

    def wait(self, future: Future[T], timeout: float | None = None) -> T:
        """The result of a queued call; if it has not run yet, the hold ends (the driver
        waits for it: holding the queue would only delay it). With `timeout`, a call
        not done by then raises `concurrent.futures.TimeoutError` (it stays queued)."""
        if not future.done():
            self.release()
        return future.result(timeout)

    def hold(self) -> None:
        """Queued calls wait (for `release`, at most `max_hold` seconds from now)."""
        self._held_until = time.monotonic() + self._max_hold
        self._open.clear()

    def release(self) -> None:
        """Queued calls run again."""
        self._open.set()

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if not self._open.is_set():
            left = self._held_until - time.monotonic()
            if left > 0:
                self._open.wait(left)
        if self._fatal is not None:
            raise self._fatal  # not run: the database is gone (module docstring)
        self._running_since = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except DatabaseUnavailable as exc:
            if self._fatal is None:
                self._fatal = exc
            raise
        finally:
            self._running_since = None

    def stalled(self) -> bool:
        """Whether the thread has been on one call for `STALLED_AFTER` seconds or more:
        waiting for the database (a retry, a SQLite lock), so whoever needs the answer of
        a later call had better not block on it (`SeededSearch.suggest`)."""
        since = self._running_since
        return since is not None and time.monotonic() - since >= STALLED_AFTER

    def close(self) -> None:
        """Wait for every queued call, stop the thread; raise the first error, if any."""
        self.release()
        try:
            while self._pending:
                self._note(self._pending.popleft())
        finally:
            self._executor.shutdown(wait=True)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._fatal is not None:
            raise self._fatal

    def _raise_failed(self) -> None:
        while self._pending and self._pending[0].done():
            self._note(self._pending.popleft())
        if self._error is not None:
            raise self._error
        if self._fatal is not None:
            raise self._fatal

    def _note(self, future: Future[Any]) -> None:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - kept and raised again in the driver
            if self._error is None:
                self._error = exc
