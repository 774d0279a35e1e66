"""Fixtures for the storage tests: an opened database on each backend and a writer on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

import storage


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The results database at head on SQLite, then on PostgreSQL."""
    eng = storage.open_database(db_url)
    yield eng
    storage.dispose_engines()  # before conftest's postgres_url drops the database


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = storage.open_database(sqlite_url)
    yield eng
    storage.dispose_engines()


@pytest.fixture
def writer(engine: Engine) -> storage.ResultWriter:
    return storage.ResultWriter(engine)


@pytest.fixture
def make_epoch() -> Callable[..., dict[str, Any]]:
    """EpochMetrics-shaped dicts (what trainers hand `on_epoch`, via `to_dict()`)."""

    def make(epoch: int, **overrides: Any) -> dict[str, Any]:
        metrics = {
            "epoch": epoch,
            "train_loss": 2.0 / (epoch + 1),
            "train_accuracy": 0.5 + 0.01 * epoch,
            "val_loss": 2.2 / (epoch + 1),
            "val_accuracy": 0.4 + 0.05 * epoch,
            "lr": 0.1,
            "epoch_seconds": 1.5,
            "images_per_second": 1000.0 + epoch,
            "diverged": False,
        }
        metrics.update(overrides)
        return metrics

    return make
