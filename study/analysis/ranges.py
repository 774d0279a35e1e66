"""Chance-aware learning-rate ranges: how many decades of lr keep a variant near its best.

`metrics.window_decades` measures a window with an absolute tolerance below the
best accuracy, which treats "0.90 -> 0.88" on CIFAR-10 and on a 2-class toy task
alike. A range here is measured relative to what a variant *learned above
chance*: at level q the threshold is

    chance + q * (best - chance),       chance = 1 / num_classes,

so q = 0.5 keeps half of the gain over guessing, whatever the dataset.

The curve is the group mean accuracy vs log10(lr), groups sorted by lr, linearly
interpolated between adjacent groups. The range at level q is the connected
interval of log10(lr) around the best group (ties: the lowest lr) where that
curve stays >= the threshold. Its ends are the interpolated crossings between the
last group at or above the threshold and the first group below it, so a grid of
four lrs still gives a width that moves continuously with the accuracies (which
is what makes a bootstrap interval of the width informative).

Where the curve has not dropped below the threshold by the first (last) lr
studied, that end is the first (last) lr and the range is *censored* on that
side: the true range is at least as wide, and a verdict must say so rather than
compare it as if it were measured.

Decisions for the degenerate cases (each pinned by a test):

* One lr only: width 0, lr_low = lr_high = that lr, censored on both sides (the
  study says nothing about either direction).
* At chance (best <= chance + min_gain, e.g. a variant at chance everywhere or
  diverged everywhere): the threshold would sit at or below chance, and every
  lr would "keep" a gain of nothing. Such a curve gets width 0, lr_low = lr_high
  = its best lr, no censoring, and `at_chance=True`; a verdict must report
  "does not learn", never a range of 0 decades.
* A dip inside: the interval stops at the first group below the threshold on
  each side; a recovery beyond the dip does not count (a practitioner sweeping
  the lr would stop at the dip too).
* A group where every trial diverged is passed as accuracy 0.0, which is below
  any threshold (chance > 0), so the range ends there like at any other drop.

As in `metrics`, the vectorized function takes means as (rows, groups): one row
is the point estimate, thousands of rows are bootstrap resamples from
`bootstrap.resample_group_means`, with no Python loop over rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

#: The levels a report shows: half, most, and nearly all of the gain over chance.
DEFAULT_LEVELS = (0.5, 0.9, 0.95)
#: Float slack so the best group itself, and a curve exactly at chance whose mean
#: rounds to 0.1000000000000001, land on the intended side of a comparison.
_SLACK = 1e-12

Bound = Literal["at_least", "at_most"]


def chance_level(num_classes: int) -> float:
    """1 / num_classes: the accuracy of guessing, the floor a range is measured from."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    return 1.0 / num_classes


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _check_chance(chance: float, min_gain: float) -> None:
    if not (math.isfinite(chance) and 0.0 <= chance < 1.0):
        raise ValueError(f"chance must be in [0, 1), got {chance!r}")
    if not (math.isfinite(min_gain) and min_gain >= 0.0):
        raise ValueError(f"min_gain must be >= 0, got {min_gain!r}")


def _is_at_chance(best: np.ndarray, chance: float, min_gain: float) -> np.ndarray:
    """Where the best mean is no real gain over chance (the one rule all functions share)."""
    return np.asarray(best, dtype=float) <= chance + min_gain + _SLACK


def _sorted_curve(means: Any, lrs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(means as rows x groups, lrs) with the groups sorted by lr, after validating both.

    Sorting here rather than trusting the caller keeps "lowest lr wins a tie" and
    "connected interval" meaningful whatever order the groups arrive in.
    """
    lrs = np.asarray(lrs, dtype=float)
    means = np.asarray(means, dtype=float)
    if means.ndim == 1:
        means = means[None, :]
    if lrs.ndim != 1 or lrs.size == 0:
        raise ValueError(f"lrs must be a non-empty 1-D sequence, got shape {lrs.shape}")
    if means.ndim != 2 or means.shape[1] != lrs.size:
        raise ValueError(f"means must be (rows, {lrs.size}), got shape {means.shape}")
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError("every lr must be finite and > 0")
    if not np.all(np.isfinite(means)):
        raise ValueError("means must be finite (pass 0.0 for a group where every trial diverged)")
    order = np.argsort(lrs, kind="stable")
    lrs = lrs[order]
    if np.any(np.diff(lrs) == 0):
        raise ValueError("lrs must be distinct (one group per lr)")
    return means[:, order], lrs


class RangeRows(NamedTuple):
    """Per-row range at one level, as arrays of shape (rows,); see `lr_range_rows`."""

    decades: np.ndarray
    log_low: np.ndarray
    log_high: np.ndarray
    censored_low: np.ndarray
    censored_high: np.ndarray


def _crossing(
    means: np.ndarray,
    log_lrs: np.ndarray,
    threshold: np.ndarray,
    inside: np.ndarray,
    outside: np.ndarray,
) -> np.ndarray:
    """log10(lr) where the line from group `inside` (>= threshold) to `outside` (<) crosses it.

    Rows with no real crossing (censored, or inside == outside) get the inside
    group's log lr; the caller overrides them. The fraction is clipped to [0, 1]
    because `_SLACK` admits an inside group a hair below the threshold.
    """
    rows = np.arange(means.shape[0])
    m_in, m_out = means[rows, inside], means[rows, outside]
    drop = m_in - m_out
    frac = np.divide(m_in - threshold, drop, out=np.zeros_like(drop), where=drop > 0)
    frac = np.clip(frac, 0.0, 1.0)
    return log_lrs[inside] + frac * (log_lrs[outside] - log_lrs[inside])


def lr_range_rows(
    means: Any, lrs: Any, chance: float, level: float, *, min_gain: float = 0.0
) -> RangeRows:
    """Per row of `means` (rows x groups): the chance-aware lr range at `level`, in log10(lr).

    Returns `RangeRows(decades, log_low, log_high, censored_low, censored_high)`,
    so `lr_range_rows(boot, lrs, chance, q).decades` is the bootstrap
    distribution of the width in one call. `lrs` may come in any order (they are
    sorted here). A row at chance (best <= chance + `min_gain`) gets width 0 at
    its best lr and no censoring; `is_at_chance_rows` says which rows those are.
    `min_gain` lets a caller declare a curve that beats chance only by noise
    (say 0.103 on a 10-class task) "at chance" too, instead of measuring a range
    on noise; 0 means exactly the rule best <= chance.
    """
    _check_level(level)
    _check_chance(chance, min_gain)
    means, lrs = _sorted_curve(means, lrs)
    n_rows, n_groups = means.shape
    rows = np.arange(n_rows)
    log_lrs = np.log10(lrs)
    positions = np.arange(n_groups)[None, :]

    best_index = np.argmax(means, axis=1)  # first maximum = lowest lr among ties
    best = means[rows, best_index]
    threshold = chance + level * (best - chance)
    below = means < (threshold - _SLACK)[:, None]
    # The range is connected: only the nearest drop on each side of the best group counts.
    last_below_before = np.where(below & (positions < best_index[:, None]), positions, -1).max(
        axis=1
    )
    first_below_after = np.where(
        below & (positions > best_index[:, None]), positions, n_groups
    ).min(axis=1)
    censored_low = last_below_before < 0
    censored_high = first_below_after >= n_groups

    out_low = np.clip(last_below_before, 0, n_groups - 1)
    in_low = np.clip(last_below_before + 1, 0, n_groups - 1)
    out_high = np.clip(first_below_after, 0, n_groups - 1)
    in_high = np.clip(first_below_after - 1, 0, n_groups - 1)
    log_low = np.where(
        censored_low, log_lrs[0], _crossing(means, log_lrs, threshold, in_low, out_low)
    )
    log_high = np.where(
        censored_high, log_lrs[-1], _crossing(means, log_lrs, threshold, in_high, out_high)
    )

    at_chance = _is_at_chance(best, chance, min_gain)
    log_low = np.where(at_chance, log_lrs[best_index], log_low)
    log_high = np.where(at_chance, log_lrs[best_index], log_high)
    censored_low = censored_low & ~at_chance
    censored_high = censored_high & ~at_chance
    return RangeRows(log_high - log_low, log_low, log_high, censored_low, censored_high)


def is_at_chance_rows(means: Any, chance: float, *, min_gain: float = 0.0) -> np.ndarray:
    """Per row of `means`: whether its best mean is no gain over chance (see `lr_range_rows`)."""
    _check_chance(chance, min_gain)
    means = np.atleast_2d(np.asarray(means, dtype=float))
    return _is_at_chance(means.max(axis=1), chance, min_gain)


@dataclass(frozen=True)
class LrRange:
    """One curve's range at one level; `decades` = log10(lr_high) - log10(lr_low).

    `at_chance=True` means there is no range to speak of (see the module
    docstring): decades is 0.0 and lr_low = lr_high = the best lr, and a verdict
    must say "does not learn" rather than present it as a 0-decade range.
    """

    level: float
    decades: float
    lr_low: float
    lr_high: float
    censored_low: bool
    censored_high: bool
    at_chance: bool = False

    @property
    def censored(self) -> bool:
        """True when either end is the edge of the study, so the width is a lower bound."""
        return self.censored_low or self.censored_high

    def to_json_dict(self) -> dict[str, Any]:
        """The report's fields (the caller adds "interval")."""
        return {
            "decades": self.decades,
            "lr_low": self.lr_low,
            "lr_high": self.lr_high,
            "censored_low": self.censored_low,
            "censored_high": self.censored_high,
        }


def _lr_of(log_value: float, log_lrs: np.ndarray, lrs: np.ndarray) -> float:
    """The lr at `log_value`: a studied lr exactly when the end sits on a group.

    10 ** log10(0.01) is not always 0.01 to the last bit, and a censored end
    should read back as the very lr the study ran, so JSON consumers can match it.
    """
    hits = np.flatnonzero(log_lrs == log_value)
    return float(lrs[hits[0]]) if hits.size else float(10.0**log_value)


def lr_range(
    means: Sequence[float] | np.ndarray,
    lrs: Sequence[float] | np.ndarray,
    chance: float,
    level: float,
    *,
    min_gain: float = 0.0,
) -> LrRange:
    """The range of one curve (group means, one per lr) at `level`, via `lr_range_rows`."""
    row = np.asarray(means, dtype=float)
    if row.ndim != 1:
        raise ValueError(f"means must be 1-D (one curve), got shape {row.shape}")
    result = lr_range_rows(row[None, :], lrs, chance, level, min_gain=min_gain)
    sorted_lrs = np.sort(np.asarray(lrs, dtype=float))
    log_lrs = np.log10(sorted_lrs)
    log_low, log_high = float(result.log_low[0]), float(result.log_high[0])
    return LrRange(
        level=float(level),
        decades=float(result.decades[0]),
        lr_low=_lr_of(log_low, log_lrs, sorted_lrs),
        lr_high=_lr_of(log_high, log_lrs, sorted_lrs),
        censored_low=bool(result.censored_low[0]),
        censored_high=bool(result.censored_high[0]),
        at_chance=bool(_is_at_chance(row.max(), chance, min_gain)),
    )


def lr_ranges(
    means: Sequence[float] | np.ndarray,
    lrs: Sequence[float] | np.ndarray,
    chance: float,
    levels: Sequence[float] = DEFAULT_LEVELS,
    *,
    min_gain: float = 0.0,
) -> tuple[LrRange, ...]:
    """`lr_range` at each of `levels`, in that order."""
    return tuple(lr_range(means, lrs, chance, q, min_gain=min_gain) for q in levels)


def max_trainable_lr(
    groups_lrs: Sequence[float],
    means: Sequence[float],
    n_diverged: Sequence[int],
    chance: float,
    best: float,
) -> float | None:
    """The largest group lr where no trial diverged and the mean keeps half the gain over chance.

    `metrics.max_stable_lr` only asks "did nothing blow up", which a run stuck at
    chance also passes; here the group must also reach chance + 0.5 * (best -
    chance). The groups need not be contiguous with the best one (this is "how
    high can the lr go and still train", not a range). None when no group
    qualifies, and always None when best <= chance: nothing trains, so no lr is
    trainable, even though the 50% level would then sit at or below chance.
    """
    lrs = np.asarray(groups_lrs, dtype=float)
    values = np.asarray(means, dtype=float)
    diverged = np.asarray(n_diverged)
    if not (lrs.shape == values.shape == diverged.shape and lrs.ndim == 1):
        raise ValueError("groups_lrs, means and n_diverged must be 1-D and of equal length")
    _check_chance(chance, 0.0)
    if lrs.size == 0 or bool(_is_at_chance(best, chance, 0.0)):
        return None
    threshold = chance + 0.5 * (best - chance)
    ok = (diverged == 0) & (values >= threshold - _SLACK)
    return float(lrs[ok].max()) if ok.any() else None


def best_lr_shift_decades(best_lr_variant: float, best_lr_baseline: float) -> float:
    """log10(variant's best lr) - log10(baseline's): > 0 when the variant peaks at a higher lr.

    INSGD divides the step by an input-energy term, so its best lr is expected to
    sit decades away from SGD's; a report states that shift separately so a wide
    range is not mistaken for a merely moved one.
    """
    if not (best_lr_variant > 0 and best_lr_baseline > 0):
        raise ValueError("best lrs must be > 0")
    return math.log10(best_lr_variant) - math.log10(best_lr_baseline)


@dataclass(frozen=True)
class WidthDifference:
    """variant.decades - baseline.decades, with what censoring allows one to say about it.

    See `compare_widths` for the meaning of `bound`, `comparable` and `clear`.
    """

    difference: float
    interval: tuple[float, float] | None
    bound: Bound | None
    comparable: bool
    clear: bool

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "interval": None if self.interval is None else list(self.interval),
            "bound": self.bound,
            "comparable": self.comparable,
            "clear": self.clear,
        }


def compare_widths(
    variant: LrRange, baseline: LrRange, interval: tuple[float, float] | None
) -> WidthDifference:
    """State variant - baseline range width honestly, given a bootstrap `interval` of it.

    A censored range is a lower bound on the true width (the curve was still
    above the threshold at the edge of the study). Hence:

    * variant censored, baseline not: the difference can only be larger than
      measured, `bound="at_least"`; it is `clear` only if the interval is
      entirely > 0 (a negative difference may be the censoring talking).
    * baseline censored, variant not: the difference can only be smaller,
      `bound="at_most"`; `clear` only if the interval is entirely < 0 (a
      positive difference is not a clear win for the variant).
    * both censored: both widths are lower bounds and the difference has no
      known sign; `bound=None`, `comparable=False`, never `clear`. Widen the lr
      grid to settle it.
    * neither censored: `bound=None`, `clear` when the interval excludes 0.
    * either at chance: there is no range to compare (a verdict should say which
      one does not learn); `comparable=False`, `bound=None`, never `clear`.

    So a censored side never makes the *other* side's win clear: only a
    difference in the direction the bound allows can be clear. No interval (too
    few seeds to bootstrap) is never clear. The two ranges must share a level.
    """
    if variant.level != baseline.level:
        raise ValueError(f"levels differ: {variant.level!r} vs {baseline.level!r}")
    difference = variant.decades - baseline.decades
    if interval is not None:
        interval = (float(interval[0]), float(interval[1]))
    if variant.at_chance or baseline.at_chance or (variant.censored and baseline.censored):
        return WidthDifference(difference, interval, None, False, False)
    above = interval is not None and interval[0] > 0
    under = interval is not None and interval[1] < 0
    if variant.censored:
        return WidthDifference(difference, interval, "at_least", True, above)
    if baseline.censored:
        return WidthDifference(difference, interval, "at_most", True, under)
    return WidthDifference(difference, interval, None, True, above or under)
