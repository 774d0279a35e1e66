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

Durability: a call waits in the queue for milliseconds. A driver killed with SIGKILL can
lose the last few, which ``--resume`` handles like any trial the dead driver left
RUNNING (marked FAIL, its configuration run again). The first error a queued call
raises is raised again in the driver at the next submit or at `close()`, so a database
that breaks mid-study still ends it with that error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Writes(Protocol):
    """Where the study's recorder and searcher send their database and Optuna calls."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


class InlineWrites:
    """Every call runs at once in the caller's thread (its error raised there): for tests
    and one-off use."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


class BackgroundWrites:
    """One worker thread running submitted calls in order; see the module docstring."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insgd-writes")
        self._pending: deque[Future[Any]] = deque()
        self._error: BaseException | None = None

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; raises the error of an earlier call, if one failed."""
        self._raise_failed()
        future = self._executor.submit(fn, *args, **kwargs)
        self._pending.append(future)
        return future

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` after everything queued before it and return its result."""
        return self.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        """Wait for every queued call, stop the thread; raise the first error, if any."""
        try:
            while self._pending:
                self._note(self._pending.popleft())
        finally:
            self._executor.shutdown(wait=True)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _raise_failed(self) -> None:
        while self._pending and self._pending[0].done():
            self._note(self._pending.popleft())
        if self._error is not None:
            raise self._error

    def _note(self, future: Future[Any]) -> None:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - kept and raised again in the driver
            if self._error is None:
                self._error = exc
