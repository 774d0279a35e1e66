"""Several processes writing one study at once lose nothing and duplicate nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

import storage

WORKERS, TRIALS, EPOCHS = 4, 50, 3
WORKER_SCRIPT = Path(__file__).with_name("storage_concurrent_worker.py")


def test_concurrent_writer_processes_lose_nothing(db_url: str) -> None:
    # The database does not exist yet: the workers race on migrating it and on the study.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER_SCRIPT),
                db_url,
                "shared",
                str(w),
                str(TRIALS),
                str(EPOCHS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err

    engine = storage.open_database(db_url, upgrade=False)
    try:
        rows = storage.queries.list_trials(engine, "shared")
        expected = sorted([*range(WORKERS * TRIALS), 10_000])
        assert [r.trial_number for r in rows] == expected
        assert all(r.state == "COMPLETE" and r.epochs_completed == EPOCHS for r in rows)
        assert all(r.final_val_accuracy == 0.1 * (EPOCHS - 1) for r in rows)
        with engine.connect() as conn:
            epochs = conn.execute(sa.text("SELECT count(*) FROM insgd_epochs")).scalar()
            studies = conn.execute(sa.text("SELECT count(*) FROM insgd_studies")).scalar()
        assert (epochs, studies) == (len(expected) * EPOCHS, 1)
    finally:
        storage.dispose_engines()
