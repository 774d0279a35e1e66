"""The robustness-to-learning-rate analysis of a set of trials, variant by variant.

`analyze_points` turns `TrialPoint`s into one `VariantSummary` per variant
("sgd", "insgd-l1", "insgd-l2", ...) plus the INSGD-minus-SGD comparisons; it is
pure (no database, no Optuna) so it is tested on hand-made numbers. Loading a
stored study and adding parameter importances is `study.analysis.robustness`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from study.analysis.bootstrap import DEFAULT_RESAMPLES, percentile_interval, resample_group_means
from study.analysis.metrics import (
    Grouping,
    LrGroup,
    TrialPoint,
    area_under_curve,
    best_of,
    choose_grouping,
    divergence_rate,
    group_by_lr,
    is_insgd,
    max_stable_lr,
    window_decades,
)
from study.analysis.options import DEFAULT_BINS, DEFAULT_TOLERANCE

BASELINE = "sgd"
INTERVAL_METRICS = ("best_accuracy", "lr_window_decades")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def to_json_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass
class VariantSummary:
    """The robustness metrics of one variant (in one setting) over its COMPLETE trials."""

    variant: str
    setting: str
    n_trials: int
    n_seeds: int
    best_accuracy: float
    best_lr: float
    lr_window_decades: float
    max_stable_lr: float | None
    divergence_rate: float
    auc: float
    groups: list[LrGroup]
    points: list[TrialPoint] = field(repr=False)
    intervals: dict[str, Interval] | None = None
    samples: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "setting": self.setting,
            "n_trials": self.n_trials,
            "n_seeds": self.n_seeds,
            "best_accuracy": self.best_accuracy,
            "best_lr": self.best_lr,
            "lr_window_decades": self.lr_window_decades,
            "max_stable_lr": self.max_stable_lr,
            "divergence_rate": self.divergence_rate,
            "auc": self.auc,
            "intervals": (
                {k: v.to_json_dict() for k, v in self.intervals.items()} if self.intervals else None
            ),
            "groups": [
                {
                    "lr": g.lr,
                    "lr_low": g.lr_low,
                    "lr_high": g.lr_high,
                    "n_trials": g.n_trials,
                    "n_seeds": len(g.seeds),
                    "n_diverged": g.n_diverged,
                    "mean_accuracy": g.mean,
                    "std_accuracy": g.std,
                }
                for g in self.groups
            ],
        }


@dataclass(frozen=True)
class Comparison:
    """One INSGD variant minus the SGD baseline of its setting, for the interval metrics."""

    variant: str
    setting: str
    baseline: str
    differences: dict[str, Interval]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "setting": self.setting,
            "baseline": self.baseline,
            **{f"{k}_diff": v.to_json_dict() for k, v in self.differences.items()},
        }


@dataclass
class Analysis:
    """Everything `analyze_points` computes; rendering is `study.analysis.report`'s job."""

    tolerance: float
    grouping: Grouping
    variants: list[VariantSummary]
    comparisons: list[Comparison]
    n_resamples: int

    @property
    def settings(self) -> list[str]:
        return list(dict.fromkeys(v.setting for v in self.variants))

    def variant(self, name: str, setting: str | None = None) -> VariantSummary | None:
        return next(
            (
                v
                for v in self.variants
                if v.variant == name and (setting is None or v.setting == setting)
            ),
            None,
        )

    def label(self, summary: VariantSummary) -> str:
        """The variant's name, with its setting only when the study has several."""
        if len(self.settings) > 1:
            return f"{summary.variant} [{summary.setting}]"
        return summary.variant


def variant_order(key: tuple[str, str]) -> tuple[str, int, str]:
    """By setting, then SGD first (the baseline), then the INSGD variants alphabetically."""
    setting, name = key
    return (setting, 0 if name == BASELINE else 1, name)


def analyze_points(
    points: Sequence[TrialPoint],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    bins: int = DEFAULT_BINS,
    grid: bool | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Analysis:
    """The robustness metrics of each variant over its COMPLETE trials.

    PRUNED, FAIL and RUNNING trials are dropped here (a trial stopped by a
    scheduler says nothing about where its accuracy would have ended). With 2+
    seeds a variant gets bootstrap intervals; an INSGD variant and SGD that both
    have them get the difference's interval, from independent resamples.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    complete = [p for p in points if p.state == "COMPLETE"]
    if not complete:
        raise ValueError("no COMPLETE trials to analyze")
    grouping = choose_grouping([p.lr for p in complete], bins, grid=grid)
    by_variant: dict[tuple[str, str], list[TrialPoint]] = {}
    for p in complete:
        by_variant.setdefault((p.setting, p.variant), []).append(p)
    variants = [
        summarize_variant(
            key[1], by_variant[key], grouping, tolerance, n_resamples=n_resamples, seed=seed
        )
        for key in sorted(by_variant, key=variant_order)
    ]
    return Analysis(
        tolerance=tolerance,
        grouping=grouping,
        variants=variants,
        comparisons=compare_to_baseline(variants),
        n_resamples=n_resamples,
    )


def summarize_variant(
    name: str,
    points: Sequence[TrialPoint],
    grouping: Grouping,
    tolerance: float,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> VariantSummary:
    """One variant's metrics (its points share one setting), with intervals at 2+ seeds."""
    groups = group_by_lr(points, grouping)
    lrs = np.array([g.lr for g in groups])
    means = np.array([[g.mean for g in groups]])
    best, best_lr = best_of(means, lrs)
    window = window_decades(means, lrs, best, tolerance)
    n_seeds = len({p.seed for p in points})
    summary = VariantSummary(
        variant=name,
        setting=points[0].setting,
        n_trials=len(points),
        n_seeds=n_seeds,
        best_accuracy=float(best[0]),
        best_lr=float(best_lr[0]),
        lr_window_decades=float(window[0]),
        max_stable_lr=max_stable_lr(groups),
        divergence_rate=divergence_rate(points),
        auc=float(area_under_curve(means, lrs)[0]),
        groups=groups,
        points=list(points),
    )
    if n_seeds >= 2 and n_resamples > 0:
        # One stream per variant, keyed by its name: adding a variant to a
        # study does not change another variant's intervals.
        rng = np.random.default_rng([seed, zlib.crc32(f"{summary.setting}|{name}".encode())])
        boot = resample_group_means(groups, n_resamples, rng)
        boot_best, _ = best_of(boot, lrs)
        summary.samples = {
            "best_accuracy": boot_best,
            "lr_window_decades": window_decades(boot, lrs, boot_best, tolerance),
        }
        summary.intervals = {
            metric: Interval(getattr(summary, metric), *percentile_interval(values))
            for metric, values in summary.samples.items()
        }
    return summary


def compare_to_baseline(variants: Sequence[VariantSummary]) -> list[Comparison]:
    """INSGD minus SGD (same setting) per INSGD variant, where both have bootstrap samples."""
    bases = {v.setting: v for v in variants if v.variant == BASELINE and v.samples is not None}
    out = []
    for v in variants:
        base = bases.get(v.setting)
        if base is None or base.samples is None or not is_insgd(v.variant) or v.samples is None:
            continue
        diffs = {
            metric: Interval(
                getattr(v, metric) - getattr(base, metric),
                *percentile_interval(v.samples[metric] - base.samples[metric]),
            )
            for metric in INTERVAL_METRICS
        }
        out.append(Comparison(v.variant, v.setting, BASELINE, diffs))
    return out


def best_trial(points: Sequence[TrialPoint]) -> TrialPoint | None:
    """The variant's best COMPLETE trial (highest accuracy, then lowest trial number)."""
    candidates = [p for p in points if p.state == "COMPLETE" and p.trial_number is not None]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (-p.accuracy, p.trial_number))
