"""What a trial's result means to the search: the metric Optuna records and when a
trial's report is its last.

Apart from `study.search.searcher` (which imports Optuna) so that the trainables
(`study.run.trainable`, `study.run.bundle`), whose modules every trial worker imports,
do not import Optuna and SQLAlchemy with them: ~0.3 s of each fresh worker's start.
"""

from __future__ import annotations

import math
from typing import Any

METRIC = "val_accuracy"
MODE = "max"


def is_final_result(result: dict[str, Any], epochs_planned: int) -> bool:
    """Whether a trial's report is its last unless a scheduler stops it sooner: its planned
    final epoch, or the epoch it diverged in (`trainers.train.is_last_epoch`, on a report)."""
    epoch = int(result.get("epoch") or 0)
    return epoch >= epochs_planned or bool(result.get("diverged"))


def stopped_early(result: dict[str, Any] | None, epochs_planned: int) -> bool:
    """A trial a scheduler stopped: fewer epochs than planned and not because it diverged."""
    return bool(result) and not is_final_result(result, epochs_planned)


def objective(value: Any) -> float:
    """The number Optuna records: accuracy, 0 where it is missing or not finite (diverged)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0
