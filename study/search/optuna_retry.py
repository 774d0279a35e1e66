"""Optuna's own storage calls, run again while the database is unavailable.

`DriverStorage` (`study.search.optuna_storage`) writes most of the driver's Optuna rows
itself, but some calls stay Optuna's (an enqueued grid point, a parameter name's first
use, user attributes one by one, reads of unfinished trials). Each `RDBStorage` method
is one session, that is one transaction or one read, so running it again after the
database failed is what running it the first time would have done: `RetryingBackend`
runs every method of the wrapped `RDBStorage` through the driver's retry
(`storage.transactions.DbRetry`). Attributes that are not methods (its engine, its
scoped session) are the storage's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: What runs a database operation again while the database is unavailable.
Retry = Callable[[Callable[[], Any]], Any]


class RetryingBackend:
    """`backend` (an Optuna `RDBStorage`) with every method call run through `retry`."""

    def __init__(self, backend: Any, retry: Retry) -> None:
        self.__dict__["_backend"] = backend
        self.__dict__["_retry"] = retry

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "_backend" not in self.__dict__:
            raise AttributeError(name)  # dunders, and a copy being unpickled
        value = getattr(self.__dict__["_backend"], name)
        if not inspect.ismethod(value):
            return value
        retry = self.__dict__["_retry"]

        def call(*args: Any, **kwargs: Any) -> Any:
            return retry(lambda: value(*args, **kwargs))

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_backend"], name, value)
