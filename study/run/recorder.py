"""The driver-side Tune callback that writes every trial and epoch to the results database.

Only the driver writes results: workers hold no database credentials, and one writer per
study works the same on SQLite and PostgreSQL. Tune calls this callback in the driver's
event loop for every trial event:

- start  -> `start_trial` (RUNNING, the trial's whole TrainConfig, its study variant, seed
  and number; the TrainConfig is the study's `TrialTemplates` merged with the trial's
  Tune config);
- result -> `record_epoch` (one write per epoch: the hot path);
- complete -> `finish_trial` with the node, host and device of its last report: COMPLETE,
  or PRUNED with ``stopped_early`` when a scheduler ended it before its planned epochs (a
  diverged trial also ends early, but is COMPLETE);
- error (retries used up) -> FAIL with the error text.

A worker failure with retries left is not an end: Tune restores the trial from its last
per-epoch checkpoint and this callback keeps the trial RUNNING under the same number.

The writes go through `writes` (`study.writes`: in a launch, a background thread, in
order), so they cost Tune's event loop only the time to build them; every time stamp is
taken here, when the event happens, not when its row is written. From a trial's last
result (its final or diverged epoch; its end, when a scheduler stopped it early) to the
end of the Tune step that starts the next trial this callback holds that queue, so the
writes run while the next trial trains instead of slowing Tune down while it ends one
trial and starts the next (`study.writes`).

The rows of one Tune step are queued together at its end as one transaction
(`ResultWriter.write_all`), and while the queue is held, those of every step until the
release: a one-epoch trial's last epoch, its end and the next trial's start are one
transaction instead of three (each costs the writes thread ~0.3 ms of CPU more than its
rows, on a 2-core machine taken from the trials). A hold that lasts past `max_hold`
(the last trial: no next one starts) ends the batch anyway, and the end of the
experiment queues what is left (`flush`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from ray.tune import Callback

from storage import COMPLETE, FAIL, PRUNED, ResultWriter
from storage.writer import TrialWrite
from study.config import is_insgd_variant
from study.run.trial_config import TrialTemplates
from study.search.searcher import is_final_result, stopped_early
from study.writes import MAX_HOLD, InlineWrites, Writes

_WHERE_KEYS = ("node_id", "hostname", "device_name")


class Recorder(Callback):
    """Writes one study's trials through `storage.ResultWriter`; see the module docstring."""

    def __init__(
        self,
        writer: ResultWriter,
        study: str,
        epochs_planned: int,
        templates: TrialTemplates,
        writes: Writes | None = None,
        max_hold: float = MAX_HOLD,
    ) -> None:
        self.writer = writer
        self.study = study
        self.epochs_planned = epochs_planned
        self.templates = templates  # a trial's TrainConfig = templates + its Tune config
        self.writes: Writes = writes if writes is not None else InlineWrites()
        self.max_hold = max_hold
        self._started: dict[int, datetime] = {}
        self._release_at_step_end = False
        self._batch: list[TrialWrite] = []
        self._held_since: float | None = None  # monotonic time of the hold, while held

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune sends the trial its first task only after this callback: the queued writes
        # run from the end of this step on, while the trial trains (study.writes)
        self._release_at_step_end = True
        number = _number(trial)
        if number in self._started:
            return  # a restart after a worker failure: same trial, same row
        config = trial.config
        variant = config["variant"]
        fields: dict[str, Any] = {
            "config": self.templates.options(config),
            "variant": variant,  # the study's name for it: its own column
            "params": {
                "optuna_trial": config.get("optuna_trial"),
                "tune_trial_id": trial.trial_id,
            },
        }
        if not is_insgd_variant(variant):
            fields["eps"] = None  # SGD has no eps, whatever TrainConfig's default says
        fields["started_at"] = self._started[number] = datetime.now(UTC)
        self._batch.append(("start_trial", (self.study, number, fields)))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        number = _number(trial)
        epoch = result.get("epoch")
        if epoch is None:
            return
        # a copy: Tune keeps the dict as the trial's last result and may add to it
        self._batch.append(("record_epoch", (self.study, number, int(epoch), dict(result))))
        if is_final_result(result, self.epochs_planned):
            # the trial's last epoch: Tune now ends it and starts the next one
            self._hold()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._release_at_step_end:
            self._release_at_step_end = False
            self._held_since = None
            self.flush()
            self.writes.release()
        elif self._held_since is None or time.monotonic() - self._held_since > self.max_hold:
            self._held_since = None
            self.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    def flush(self) -> None:
        """Queue the rows noted so far, in one transaction (see the module docstring)."""
        if self._batch:
            batch, self._batch = self._batch, []
            self.writes.submit(self.writer.write_all, batch)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        pruned = stopped_early(trial.last_result, self.epochs_planned)
        self._finish(trial, state=PRUNED if pruned else COMPLETE, stopped_early=pruned)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, state=FAIL, error=error_text(trial))

    def _finish(self, trial: Any, **outcome: Any) -> None:
        """Queue the trial's end: `outcome`, where it ran, its seconds and attempts, now."""
        last = trial.last_result or {}
        fields = {k: last.get(k) for k in _WHERE_KEYS if last.get(k) is not None}
        fields.update(
            outcome,
            wall_seconds=last.get("time_total_s"),
            params=_attempts(trial, last),
            finished_at=datetime.now(UTC),
        )
        self._batch.append(("finish_trial", (self.study, _number(trial), fields)))
        # Tune now starts the next trial: the queue waits until then (study.writes)
        self._hold()

    def _hold(self) -> None:
        if self._held_since is None:
            self._held_since = time.monotonic()
        self.writes.hold()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state; an engine does not pickle, and a
        # study is resumed from the database, never from that state.
        return {"study": self.study, "epochs_planned": self.epochs_planned}


def error_text(trial: Any) -> str:
    """The trial's last error as text (Ray's traceback included), or a placeholder."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - reading the error file must never end the study
        error = None
    text = str(error).strip() if error else ""
    return text or "the trial failed (no error text was recorded)"


def last_line(text: str) -> str:
    """The most telling line of a traceback: its last non-empty one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _attempts(trial: Any, last: dict[str, Any]) -> dict[str, Any]:
    """How often the trial's worker died, and the checkpoint epoch its last attempt began at."""
    return {
        "worker_failures": int(trial.num_failures),
        "resumed_from_epoch": int(last.get("resumed_from_epoch") or 0),
    }


def _number(trial: Any) -> int:
    return int(trial.config["trial_number"])
