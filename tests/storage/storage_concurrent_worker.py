"""One of several processes writing the same study (run by test_storage_concurrency.py).

Usage: python storage_concurrent_worker.py URL STUDY WORKER TRIALS EPOCHS

Opens the (possibly not yet created) database itself, so that the workers also
race on creating the schema and the study, then writes its own block of trials
the way the driver does (start, then finish with every epoch; every fifth trial
also writes each epoch as it happens), replays some writes as a retry would,
and writes one trial that every worker shares.
"""

from __future__ import annotations

import sys

import storage


def main(url: str, study: str, worker: int, trials: int, epochs: int) -> None:
    writer = storage.ResultWriter(storage.open_database(url))
    writer.create_study(study, {"space": {"lr": [0.001, 10.0]}}, "concurrency-test")
    shared = 10_000  # every worker writes this trial number too: still one row
    numbers = [worker * trials + i for i in range(trials)] + [shared]
    for number in numbers:
        config = {
            "optimizer": "insgd",
            "norm": "l1" if number % 2 else "l2",
            "lr": 0.001 * (1 + number),
        }
        writer.start_trial(study, number, {"config": config, "hostname": f"worker{worker}"})
        rows = []
        for epoch in range(epochs):
            metrics = {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.1 * epoch}
            if number % 5 == 0:
                writer.record_epoch(study, number, epoch, metrics)
            rows.append(metrics)
        writer.finish_trial(study, number, {"wall_seconds": 1.0}, rows)
        if number % 10 == 0:  # a retried finish, as after a lost acknowledgement
            writer.finish_trial(study, number, {"wall_seconds": 1.0}, rows)
    storage.dispose_engines()


if __name__ == "__main__":
    url, study, worker, trials, epochs = sys.argv[1:6]
    main(url, study, int(worker), int(trials), int(epochs))
