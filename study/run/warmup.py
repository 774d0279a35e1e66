"""The end-of-study report's imports, made while the first trial starts.

The robustness report at the end of a launch imports matplotlib (with its font cache),
scikit-learn and scipy (through Optuna's importance evaluators): about 1.6 s of a fresh
driver process on a 2-core VM. `ReportWarmup` imports them in a daemon thread once the
first trial has started, while the driver only waits for that trial's worker to import
torch. Started before `Tuner.fit`, the same imports held the GIL while Tune set itself up
and delayed the first trial instead; made after the last trial, they added their seconds
to every launch.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

#: What the end-of-study report imports (`study.analysis.dashboard.publish_report`).
REPORT_MODULES = (
    "study.analysis.robustness",
    "study.analysis.importance",
    "optuna.importance",
    "study.analysis.plots",
    "study.analysis.report",
    "study.analysis.dashboard",
    "optuna.artifacts",
    "optuna_dashboard",
)


class ReportWarmup(Callback):
    """Imports the report's modules in a daemon thread from the first trial's start on,
    then calls `then` (a launch passes `study.run.collector.freeze_long_lived`).

    A failed import is ignored here: the report imports the module again and reports the
    error as it always has.
    """

    def __init__(
        self,
        then: Callable[[], None] = lambda: None,
        modules: tuple[str, ...] = REPORT_MODULES,
    ) -> None:
        self._then = then
        self._modules = modules
        self._thread: threading.Thread | None = None

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.start()

    def start(self) -> None:
        """Start the imports unless they have started (Tune's loop is the only caller)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="insgd-warmup", daemon=True)
            self._thread.start()

    def join(self) -> None:
        """Wait for the imports and `then`, starting them first if no trial ever started."""
        self.start()
        assert self._thread is not None
        self._thread.join()

    def _work(self) -> None:
        try:
            for name in self._modules:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001, S112 - the report path raises it again later
                    continue
        finally:
            self._then()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state; a thread does not pickle, and a
        # study is resumed from the database, never from that state.
        return {"_modules": self._modules}
