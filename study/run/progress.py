"""What a person watching a study sees: one line per finished trial, and a summary at the end.

Each line names the trial (variant, lr, eps, seed), its outcome (final validation accuracy,
"diverged", "pruned@E" or "FAILED"), its seconds, then the running count, the best result
so far and an estimate of the time left. The estimate is this launch's elapsed time per
finished trial times the trials left: it already accounts for how many run at once.
The summary is computed from the database, so a resumed study includes earlier trials.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from study.config import VARIANTS, is_insgd_variant
from study.run.recorder import error_text, last_line
from study.search.searcher import objective, stopped_early
from study.search.space import row_variant


@dataclass
class Best:
    accuracy: float
    label: str


class Progress(Callback):
    """Prints a line per finished trial to `out` (stdout), see the module docstring."""

    def __init__(
        self,
        *,
        total: int,
        done_before: int,
        epochs_planned: int,
        best: Best | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.total = total
        self.done = done_before
        self.epochs_planned = epochs_planned
        self.best = best
        self.out = out
        self._finished_now = 0
        self._started = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if stopped_early(last, self.epochs_planned):
            outcome = f"pruned@{last.get('epoch')}"
        elif last.get("diverged"):
            outcome = "diverged"
        else:
            accuracy = objective(last.get("val_accuracy"))
            outcome = f"acc {accuracy:.4f}"
            if self.best is None or accuracy > self.best.accuracy:
                config = trial.config
                self.best = Best(
                    accuracy,
                    config_label(config["variant"], config["lr"], config.get("eps")),
                )
        self._finish(trial, outcome, last.get("time_total_s"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        self._finish(
            trial, f"FAILED ({last_line(error_text(trial))[:120]})", last.get("time_total_s")
        )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epoch = last.get("epoch")
        where = f"from its epoch {epoch} checkpoint" if epoch else "from the start"
        self._print(
            f"        trial {trial.config['trial_number']:>4}  worker failed "
            f"(failure {trial.num_failures}); restarting {where}"
        )

    def _finish(self, trial: Any, outcome: str, seconds: Any) -> None:
        self.done += 1
        self._finished_now += 1
        secs = trial_seconds(seconds)
        best = f"best {self.best.accuracy:.4f} {self.best.label}" if self.best else "best -"
        self._print(
            f"{self.done:>4}/{self.total:<4} trial {trial.config['trial_number']:>4}  "
            f"{trial_label(trial.config):<42} {outcome:<14} {secs}  | {best} | "
            f"{self.eta()}"
        )

    def eta(self) -> str:
        left = max(0, self.total - self.done)
        if left == 0:
            return "done"
        if not self._finished_now:
            return "time left ?"
        per_trial = (time.monotonic() - self._started) / self._finished_now
        return f"~{format_seconds(per_trial * left)} left"

    def _print(self, line: str) -> None:
        out = self.out or sys.stdout
        out.write(line + "\n")
        out.flush()

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total}  # Tune pickles callbacks; the stream does not pickle


def trial_label(config: dict[str, Any]) -> str:
    eps = config.get("eps")
    eps_text = "-" if eps is None else f"{eps:.3g}"
    return (
        f"{config['variant']:<15} lr={config['lr']:<9.3g} eps={eps_text:<7} seed={config['seed']}"
    )


def config_label(variant: str, lr: float, eps: float | None) -> str:
    """A configuration without its seed: "insgd-l2 lr=0.1 eps=0.01"."""
    return f"{variant} lr={lr:.3g}" + ("" if eps is None else f" eps={eps:.3g}")


def trial_seconds(seconds: Any) -> str:
    """A trial's seconds in a fixed 7-character column; tiny trials (a digits MLP epoch
    takes milliseconds) keep two decimals instead of printing as 0.0s."""
    if seconds is None:
        return "      ?"
    value = float(seconds)
    return f"{value:6.2f}s" if value < 10 else f"{value:6.1f}s"


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# ------------------------------------------------------------------------------ summary
@dataclass
class ConfigResult:
    """One configuration's outcome over its COMPLETE seeds."""

    variant: str
    lr: float
    eps: float | None
    accuracies: list[float]
    diverged: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def label(self) -> str:
        return config_label(self.variant, self.lr, self.eps)


def best_per_variant(rows: Iterable[Any]) -> list[ConfigResult]:
    """The best configuration of each variant by mean final accuracy over its seeds.

    Only COMPLETE trials count; a diverged trial counts as accuracy 0 (as in the report).
    """
    groups: dict[tuple[str, float, float | None], ConfigResult] = {}
    for row in rows:
        if row.state != "COMPLETE" or row.lr is None:
            continue
        variant = row_variant(row)
        eps = None if not is_insgd_variant(variant) or row.eps is None else float(row.eps)
        key = (variant, float(row.lr), eps)
        group = groups.setdefault(key, ConfigResult(variant, float(row.lr), eps, [], 0))
        accuracy = 0.0 if row.diverged else objective(row.final_val_accuracy)
        group.accuracies.append(accuracy)
        group.diverged += int(bool(row.diverged))
    best: dict[str, ConfigResult] = {}
    for group in groups.values():
        current = best.get(group.variant)
        if current is None or group.mean > current.mean:
            best[group.variant] = group
    return [best[v] for v in sorted(best, key=_variant_order)]


def summary_table(rows: Sequence[Any]) -> str:
    """A plain-text table: the best configuration per variant, then the state counts."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    lines = [
        "best configuration per variant (mean final validation accuracy over seeds):",
        f"  {'variant':<15} {'lr':>9} {'eps':>9} {'accuracy':>9} {'std':>7} "
        f"{'seeds':>5} {'diverged':>8}",
    ]
    results = best_per_variant(rows)
    for result in results:
        eps = "-" if result.eps is None else f"{result.eps:.3g}"
        lines.append(
            f"  {result.variant:<15} {result.lr:>9.3g} {eps:>9} {result.mean:>9.4f} "
            f"{result.std:>7.4f} {len(result.accuracies):>5} {result.diverged:>8}"
        )
    if not results:
        lines.append("  (no COMPLETE trials)")
    states = ", ".join(
        f"{counts[s]} {s}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING") if counts.get(s)
    )
    lines.append(f"trials: {states or 'none'}")
    return "\n".join(lines)


def _variant_order(variant: str) -> tuple[int, str]:
    """`VARIANTS` order (SGD first, each frozen control after the INSGD variants), any
    other name after them."""
    return (VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS), variant)
