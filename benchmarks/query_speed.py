"""How fast the query API reads a whole study: 10,000 trials, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/query_speed.py                       # SQLite only
    .venv/bin/python benchmarks/query_speed.py \\
        --postgres postgresql://postgres@127.0.0.1:5432/test          # and PostgreSQL

Each backend gets a scratch database (a temporary SQLite file; a database
created on the PostgreSQL server and dropped afterwards), migrated to head by
`storage.open_database`, then filled in bulk with one study of --trials trials
(and --epochs epoch rows per trial). Reads go through the public API
(`storage.queries`), the same calls `insgd-study query` and the report make;
each is timed --repeat times and the best and median wall-clock times, and
the best CPU time of this process (which a busy machine does not inflate;
PostgreSQL's own work is not in it), are printed as a Markdown table, with
the machine it ran on and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import storage
from storage import queries
from storage.schema import Epoch, Study, Trial
from study.commands.query import render_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=0, help="epoch rows per trial (default 0)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="also benchmark PostgreSQL: a scratch database is created on this server",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    args = parser.parse_args(argv)

    print(machine())
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| backend | operation | rows | best ms | median ms | best CPU ms |")
    print("|---|---|---:|---:|---:|---:|")
    backends: list[Callable[[], Any]] = []
    if not args.no_sqlite:
        backends.append(scratch_sqlite)
    if args.postgres:
        backends.append(lambda: scratch_postgres(args.postgres))
    for scratch in backends:
        with scratch() as url:
            engine = storage.open_database(url)
            populate(engine, "bench", args.trials, args.epochs)
            for name, rows, best, median, cpu in run_reads(engine, "bench", args):
                backend = engine.dialect.name
                print(f"| {backend} | {name} | {rows} | {best:.1f} | {median:.1f} | {cpu:.1f} |")
            storage.dispose_engines()
    return 0


def run_reads(engine: sa.Engine, study: str, args: argparse.Namespace) -> Iterator[tuple]:
    reads: list[tuple[str, Callable[[], Any]]] = [
        ("list_trials(study)", lambda: queries.list_trials(engine, study)),
        (
            "list_trials(study, norm=l2, 0.01<=lr<=1)",
            lambda: queries.list_trials(engine, study, ["norm=l2", "lr>=0.01", "lr<=1"]),
        ),
        (
            "list_trials(study, order_by=val_accuracy:desc)",
            lambda: queries.list_trials(engine, study, order_by="val_accuracy:desc"),
        ),
        (
            "list_trials + JSON (query --format json)",
            lambda: render_json(queries.list_trials(engine, study)),
        ),
    ]
    if args.epochs:
        reads.append(("trial_epochs(one trial)", lambda: queries.trial_epochs(engine, study, 0)))
        reads.append(("study_epochs(study)", lambda: queries.study_epochs(engine, study)))
    for name, read in reads:
        result = read()  # warm the statement cache and the server's buffers
        times, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            read()
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
        rows = len(result) if isinstance(result, list) else len(json.loads(result))
        yield name, rows, min(times), statistics.median(times), min(cpu)


def populate(engine: sa.Engine, study: str, trials: int, epochs: int) -> None:
    """One study of `trials` realistic trial rows, inserted in bulk (a few seconds)."""
    rng = random.Random(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        study_id = conn.execute(
            sa.insert(Study)
            .values(name=study, created_at=start, config={"trials": trials}, code_version="bench")
            .returning(Study.id)
        ).scalar_one()
        rows = []
        for n in range(trials):
            optimizer = "sgd" if n % 3 == 0 else "insgd"
            accuracy = rng.uniform(0.1, 0.95)
            rows.append(
                {
                    "study_id": study_id,
                    "trial_number": n,
                    "state": rng.choice(["COMPLETE"] * 8 + ["PRUNED", "FAIL"]),
                    "optimizer": optimizer,
                    "norm": ["none", "l1", "l2"][n % 3],
                    "normalizer": "log",
                    "granularity": "layer",
                    "lr": 10 ** rng.uniform(-3, 1),
                    "eps": 0.01,
                    "beta": 0.9,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "batch_size": 128,
                    "seed": n % 5,
                    "model": "toy-cnn",
                    "dataset": "cifar10",
                    "epochs_planned": 200,
                    "epochs_completed": 200,
                    "final_val_accuracy": accuracy,
                    "best_val_accuracy": accuracy + 0.01,
                    "final_train_loss": rng.uniform(0.01, 2.0),
                    "diverged": accuracy < 0.15,
                    "stopped_early": False,
                    "wall_seconds": rng.uniform(100, 1000),
                    "node_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "hostname": "gpu-1",
                    "device_name": "NVIDIA H100",
                    "started_at": start + timedelta(minutes=n),
                    "finished_at": start + timedelta(minutes=n + 10),
                    "error": None,
                    "params": {"schedule": "multistep", "nesterov": False},
                }  # fmt: skip
            )
        conn.execute(sa.insert(Trial), rows)
        if epochs:
            numbered = sa.select(Trial.trial_number, Trial.id).where(Trial.study_id == study_id)
            ids = {number: trial_id for number, trial_id in conn.execute(numbered)}
            epoch_rows = [
                {
                    "trial_id": ids[n],
                    "epoch": e,
                    "train_loss": 1.0 / (e + 1),
                    "train_accuracy": 0.5,
                    "val_loss": 1.1 / (e + 1),
                    "val_accuracy": 0.5,
                    "lr": 0.1,
                    "epoch_seconds": 3.0,
                    "images_per_second": 20000.0,
                    "diverged": False,
                    "recorded_at": start,
                }  # fmt: skip
                for n in range(trials)
                for e in range(epochs)
            ]
            conn.execute(sa.insert(Epoch), epoch_rows)


@contextmanager
def scratch_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="insgd-bench-") as tmp:
        yield f"sqlite:///{tmp}/bench.db"


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    admin = sa.create_engine(storage.normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"insgd_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield storage.normalize_url(admin_url).rsplit("/", 1)[0] + f"/{name}"
    finally:
        storage.dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"machine: {cpu}, {os.cpu_count()} CPUs{load}, Python {platform.python_version()}, "
        f"SQLAlchemy {sa.__version__}, SQLite {sqlite3.sqlite_version}"
    )


if __name__ == "__main__":
    sys.exit(main())
