"""The robustness-to-learning-rate analysis of a set of trials, variant by variant.

`analyze_points` turns `TrialPoint`s into one `VariantSummary` per variant
("sgd", "insgd-l1", "insgd-l2", "insgd-l2-frozen", ...) plus the comparisons: each
INSGD variant minus SGD, and each INSGD variant minus its frozen-normalizer control
(which separates adaptivity from a per-layer rescale of the step). It is pure (no
database, no Optuna) so it is tested on hand-made numbers. Loading a stored study and
adding parameter importances is `study.analysis.robustness`.

The headline metric is the chance-aware lr range (`study.analysis.ranges`): at level
q, the decades of lr over which the mean accuracy stays above chance + q * (best -
chance), with censoring where the range reaches the edge of the lrs studied.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from study.analysis.bootstrap import DEFAULT_RESAMPLES, percentile_interval, resample_group_means
from study.analysis.metrics import (
    FROZEN_SUFFIX,
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
from study.analysis.options import DEFAULT_BINS, DEFAULT_LEVELS, DEFAULT_TOLERANCE
from study.analysis.ranges import (
    LrRange,
    WidthDifference,
    best_lr_shift_decades,
    compare_widths,
    lr_range,
    lr_range_rows,
    max_trainable_lr,
)

BASELINE = "sgd"
INTERVAL_METRICS = ("best_accuracy", "lr_window_decades", "auc")
DEFAULT_CHANCE = 0.1


def level_key(level: float) -> str:
    """A level as the JSON key and label it goes by: 0.9 -> "0.9"."""
    return f"{float(level):g}"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    low: float | None = None
    high: float | None = None

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (never without an interval)."""
        if self.low is None or self.high is None:
            return False
        return self.low > 0.0 or self.high < 0.0

    def to_json_dict(self) -> dict[str, float | None]:
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
    chance: float = DEFAULT_CHANCE
    ranges: dict[str, LrRange] = field(default_factory=dict)
    max_trainable_lr: float | None = None
    best_lr_shift_decades: float | None = None

    def range_interval(self, level: str) -> Interval | None:
        """The bootstrap interval of the range width at `level` (None with one seed)."""
        return (self.intervals or {}).get(f"range:{level}")

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
            "chance": self.chance,
            "ranges": {
                key: {
                    **r.to_json_dict(),
                    "at_chance": r.at_chance,
                    "interval": _low_high(self.range_interval(key)),
                }
                for key, r in self.ranges.items()
            },
            "max_trainable_lr": self.max_trainable_lr,
            "best_lr_shift_decades": self.best_lr_shift_decades,
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
    """One INSGD variant minus a baseline of its setting: SGD, or the variant's frozen
    control. `differences` holds best accuracy, the old lr window and AUC (intervals
    where both sides have 2+ seeds); `ranges` the range widths per level, stated with
    what censoring allows (`ranges.compare_widths`)."""

    variant: str
    setting: str
    baseline: str
    differences: dict[str, Interval]
    ranges: dict[str, WidthDifference] = field(default_factory=dict)
    best_lr_shift_decades: float | None = None

    @property
    def is_control(self) -> bool:
        """Whether the baseline is the variant's frozen control (an adaptivity comparison)."""
        return self.baseline.endswith(FROZEN_SUFFIX)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "setting": self.setting,
            "baseline": self.baseline,
            "range_diff": {
                key: {
                    "estimate": d.difference,
                    "low": None if d.interval is None else d.interval[0],
                    "high": None if d.interval is None else d.interval[1],
                    "bound": d.bound,
                    "comparable": d.comparable,
                    "clear": d.clear,
                }
                for key, d in self.ranges.items()
            },
            "best_lr_shift_decades": self.best_lr_shift_decades,
            **{f"{k}_diff": v.to_json_dict() for k, v in self.differences.items()},
        }


def _low_high(interval: Interval | None) -> dict[str, float | None] | None:
    return None if interval is None else {"low": interval.low, "high": interval.high}


@dataclass
class Analysis:
    """Everything `analyze_points` computes; rendering is `study.analysis.report`'s job."""

    tolerance: float
    grouping: Grouping
    variants: list[VariantSummary]
    comparisons: list[Comparison]
    n_resamples: int
    levels: tuple[float, ...] = DEFAULT_LEVELS
    chance: float = DEFAULT_CHANCE

    @property
    def level_keys(self) -> list[str]:
        return [level_key(q) for q in self.levels]

    @property
    def headline_level(self) -> str:
        """The level verdicts lead with: 0.9 when studied, else the middle one."""
        keys = self.level_keys
        return "0.9" if "0.9" in keys else keys[len(keys) // 2]

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
    """By setting, then SGD first (the baseline), then the INSGD variants alphabetically
    (a frozen control right after its variant)."""
    setting, name = key
    return (setting, 0 if name == BASELINE else 1, name)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Levels sorted, each in (0, 1), no duplicates; ValueError naming the bad one."""
    out = []
    for q in levels:
        if not isinstance(q, int | float) or isinstance(q, bool) or not 0.0 < float(q) < 1.0:
            raise ValueError(f"each level must be a number in (0, 1), got {q!r}")
        out.append(float(q))
    if not out:
        raise ValueError("at least one level is needed")
    if len({level_key(q) for q in out}) != len(out):
        raise ValueError(f"levels repeat a value: {', '.join(map(level_key, out))}")
    return tuple(sorted(out))


def analyze_points(
    points: Sequence[TrialPoint],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    bins: int = DEFAULT_BINS,
    grid: bool | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    levels: Sequence[float] = DEFAULT_LEVELS,
    chance: float = DEFAULT_CHANCE,
) -> Analysis:
    """The robustness metrics of each variant over its COMPLETE trials.

    PRUNED, FAIL and RUNNING trials are dropped here (a trial stopped by a
    scheduler says nothing about where its accuracy would have ended). With 2+
    seeds a variant gets bootstrap intervals; two variants that both have them get
    the difference's interval, from independent resamples. `chance` is 1 / classes
    of the study's dataset; `levels` the fractions of the gain over chance a range
    keeps.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    levels = check_levels(levels)
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance must be in [0, 1), got {chance!r}")
    complete = [p for p in points if p.state == "COMPLETE"]
    if not complete:
        raise ValueError("no COMPLETE trials to analyze")
    grouping = choose_grouping([p.lr for p in complete], bins, grid=grid)
    by_variant: dict[tuple[str, str], list[TrialPoint]] = {}
    for p in complete:
        by_variant.setdefault((p.setting, p.variant), []).append(p)
    variants = [
        summarize_variant(
            key[1],
            by_variant[key],
            grouping,
            tolerance,
            n_resamples=n_resamples,
            seed=seed,
            levels=levels,
            chance=chance,
        )
        for key in sorted(by_variant, key=variant_order)
    ]
    return Analysis(
        tolerance=tolerance,
        grouping=grouping,
        variants=variants,
        comparisons=compare_variants(variants),
        n_resamples=n_resamples,
        levels=levels,
        chance=chance,
    )


def summarize_variant(
    name: str,
    points: Sequence[TrialPoint],
    grouping: Grouping,
    tolerance: float,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    levels: Sequence[float] = DEFAULT_LEVELS,
    chance: float = DEFAULT_CHANCE,
) -> VariantSummary:
    """One variant's metrics (its points share one setting), with intervals at 2+ seeds."""
    groups = group_by_lr(points, grouping)
    lrs = np.array([g.lr for g in groups])
    means = np.array([[g.mean for g in groups]])
    best, best_lr = best_of(means, lrs)
    window = window_decades(means, lrs, best, tolerance)
    curve = means[0]
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
        chance=chance,
        ranges={level_key(q): lr_range(curve, lrs, chance, q) for q in levels},
        max_trainable_lr=max_trainable_lr(
            lrs.tolist(), curve.tolist(), [g.n_diverged for g in groups], chance, float(best[0])
        ),
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
            "auc": area_under_curve(boot, lrs),
        }
        for q in levels:
            summary.samples[f"range:{level_key(q)}"] = lr_range_rows(boot, lrs, chance, q).decades
        summary.intervals = {
            metric: Interval(_point_value(summary, metric), *percentile_interval(values))
            for metric, values in summary.samples.items()
        }
    return summary


def _point_value(summary: VariantSummary, metric: str) -> float:
    if metric.startswith("range:"):
        return summary.ranges[metric.split(":", 1)[1]].decades
    return float(getattr(summary, metric))


def compare_variants(variants: Sequence[VariantSummary]) -> list[Comparison]:
    """Each INSGD variant minus SGD of its setting, then minus its frozen control.

    Intervals come from the two variants' independent bootstrap samples where both
    have 2+ seeds; with fewer, the comparison carries the point differences alone
    (and is never called clear). Each variant's `best_lr_shift_decades` (vs SGD) is
    set here too.
    """
    by_key = {(v.setting, v.variant): v for v in variants}
    out = []
    for v in variants:
        if not is_insgd(v.variant):
            continue
        base = by_key.get((v.setting, BASELINE))
        if base is not None:
            v.best_lr_shift_decades = best_lr_shift_decades(v.best_lr, base.best_lr)
            out.append(compare(v, base))
        control = by_key.get((v.setting, v.variant + FROZEN_SUFFIX))
        if control is not None:
            out.append(compare(v, control))
    return out


def compare(v: VariantSummary, base: VariantSummary) -> Comparison:
    """`v` minus `base`: point differences, intervals where both were bootstrapped."""
    both = v.samples is not None and base.samples is not None
    diffs = {}
    for metric in INTERVAL_METRICS:
        estimate = float(getattr(v, metric)) - float(getattr(base, metric))
        if both:
            assert v.samples is not None and base.samples is not None
            low, high = percentile_interval(v.samples[metric] - base.samples[metric])
            diffs[metric] = Interval(estimate, low, high)
        else:
            diffs[metric] = Interval(estimate)
    ranges = {}
    for key, mine in v.ranges.items():
        theirs = base.ranges.get(key)
        if theirs is None:
            continue
        interval = None
        if both:
            assert v.samples is not None and base.samples is not None
            name = f"range:{key}"
            interval = percentile_interval(v.samples[name] - base.samples[name])
        ranges[key] = compare_widths(mine, theirs, interval)
    return Comparison(
        v.variant,
        v.setting,
        base.variant,
        diffs,
        ranges,
        best_lr_shift_decades(v.best_lr, base.best_lr),
    )


def best_trial(points: Sequence[TrialPoint]) -> TrialPoint | None:
    """The variant's best COMPLETE trial (highest accuracy, then lowest trial number)."""
    candidates = [p for p in points if p.state == "COMPLETE" and p.trial_number is not None]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (-p.accuracy, p.trial_number))
