"""Robustness-to-learning-rate metrics, as pure functions over trial outcomes.

The question a study answers is not "which variant wins at its best lr" (the
paper's gains there are within a standard deviation) but "how far can the lr
move before a variant falls apart". Every metric here is therefore a function of
the curve *group mean accuracy vs log10(lr)*, computed per variant.

The functions take a small input type of their own, `TrialPoint`, rather than a
database row, so the math can be tested with hand-made numbers and reused on any
source of trials; `point_from_row` adapts a `storage.queries.TrialRow`.

The curve functions (`best_of`, `window_decades`, `area_under_curve`) accept a
2-D array of group means, one row per curve, so the same code computes the point
estimate (one row) and the bootstrap distribution (thousands of rows) without a
Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GROUPINGS = ("exact", "log-bins")


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial, reduced to what the robustness metrics need.

    `accuracy` is the final validation accuracy as a fraction; a diverged trial
    has accuracy 0.0 whatever it reported (a model that blew up is no model).
    """

    variant: str
    lr: float
    accuracy: float
    diverged: bool = False
    seed: int = 0
    eps: float | None = None
    state: str = "COMPLETE"
    trial_number: int | None = None
    setting: str = ""


@dataclass(frozen=True)
class LrGroup:
    """The trials of one variant at one learning rate (or in one log-spaced lr bin).

    `lr` is the value the group stands for: the exact lr of a grid, or the
    geometric centre of a bin, whose edges are `lr_low` and `lr_high`.
    `seed_sums`/`seed_counts` hold the accuracy sum and trial count per seed (in
    the order of `seeds`) so the bootstrap can resample whole seeds.
    """

    lr: float
    lr_low: float
    lr_high: float
    n_trials: int
    n_diverged: int
    mean: float
    seeds: tuple[int, ...]
    seed_sums: tuple[float, ...]
    seed_counts: tuple[int, ...]

    @property
    def seed_means(self) -> np.ndarray:
        return np.asarray(self.seed_sums, dtype=float) / np.asarray(self.seed_counts, dtype=float)

    @property
    def std(self) -> float:
        """Standard deviation of the per-seed means (0 with a single seed)."""
        means = self.seed_means
        return float(np.std(means, ddof=1)) if means.size > 1 else 0.0


@dataclass(frozen=True)
class Grouping:
    """How trials are grouped by lr: exact values (grid studies) or log-spaced bins."""

    mode: str
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in GROUPINGS:
            raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}; got {self.mode!r}")

    def key(self, lr: float) -> tuple[float, float, float]:
        """(representative lr, low edge, high edge) of the group `lr` falls into."""
        if self.mode == "exact" or len(self.edges) < 2:
            value = float(f"{lr:.12g}")  # merge float noise such as 0.1 vs 0.1000000000001
            return value, value, value
        edges = np.asarray(self.edges)
        index = int(np.clip(np.searchsorted(edges, lr, side="right") - 1, 0, len(edges) - 2))
        low, high = float(edges[index]), float(edges[index + 1])
        return math.sqrt(low * high), low, high


def variant_name(
    optimizer: str,
    norm: str | None = None,
    normalizer: str | None = "log",
    granularity: str | None = "layer",
    beta: float | None = None,
) -> str:
    """The variant label a report compares: "sgd", "insgd-l1", "insgd-l2", plus suffixes.

    "-frozen" marks the frozen-normalizer control (beta 1.0: the study's
    "insgd-l2-frozen", ...), "-nlms" the plain NLMS normalizer and "-channel" the
    per-channel input energy: they are different algorithms, so their trials must not
    be pooled.
    """
    if optimizer == "sgd" or norm in (None, "none", ""):
        return "sgd"
    name = f"insgd-{norm}"
    if beta == 1.0:
        name += "-frozen"
    if normalizer == "nlms":
        name += "-nlms"
    if granularity == "channel":
        name += "-channel"
    return name


def is_insgd(variant: str) -> bool:
    return variant.startswith("insgd")


def setting_name(model: str | None, dataset: str | None, batchnorm: bool | None = None) -> str:
    """What a trial trained ("toy-cnn/cifar10", "toy-cnn/cifar10 no-BN"): trials of
    different settings are never pooled, since BN alone changes how a net takes a high lr."""
    name = f"{model or '?'}/{dataset or '?'}"
    return name + (" no-BN" if batchnorm is False else "")


def point_from_row(row: Any) -> TrialPoint:
    """Adapt a `storage.queries.TrialRow` (or anything with the same attributes)."""
    diverged = bool(getattr(row, "diverged", False))
    accuracy = getattr(row, "final_val_accuracy", None)
    if diverged or accuracy is None or not math.isfinite(float(accuracy)):
        accuracy = 0.0
    eps = getattr(row, "eps", None)
    variant = variant_name(
        str(getattr(row, "optimizer", "insgd")),
        getattr(row, "norm", None),
        getattr(row, "normalizer", "log"),
        getattr(row, "granularity", "layer"),
        getattr(row, "beta", None),
    )
    seed = getattr(row, "seed", None)
    batchnorm = getattr(row, "batchnorm", None)
    params = getattr(row, "params", None)
    if batchnorm is None and isinstance(params, dict):
        batchnorm = params.get("batchnorm")
    return TrialPoint(
        variant=variant,
        lr=float(row.lr),
        accuracy=float(accuracy),
        diverged=diverged,
        seed=int(seed) if seed is not None else 0,
        eps=None if eps is None or variant == "sgd" else float(eps),
        state=str(getattr(row, "state", "COMPLETE")),
        trial_number=getattr(row, "trial_number", None),
        setting=setting_name(
            getattr(row, "model", None),
            getattr(row, "dataset", None),
            batchnorm if isinstance(batchnorm, bool) else None,
        ),
    )


def choose_grouping(lrs: Iterable[float], bins: int, *, grid: bool | None = None) -> Grouping:
    """Exact lr values for a grid, log-spaced bins over the whole study otherwise.

    `grid=None` decides from the data: a study with no more distinct lrs than
    `bins` is a grid in all but name. The bin edges span every variant's trials,
    so the variants' groups line up and can be compared bin by bin.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins!r}")
    values = sorted({float(f"{lr:.12g}") for lr in lrs})
    if not values:
        return Grouping("exact")
    if grid or (grid is None and len(values) <= bins) or values[0] == values[-1]:
        return Grouping("exact")
    edges = np.geomspace(values[0], values[-1], bins + 1)
    return Grouping("log-bins", tuple(float(e) for e in edges))


def group_by_lr(points: Sequence[TrialPoint], grouping: Grouping) -> list[LrGroup]:
    """The lr groups of one variant's trials, sorted by lr; seeds and eps are pooled.

    An exact group stands for the lr its trials ran at (not the rounded key that
    merged float noise), so JSON consumers can match it against their own grid.
    """
    buckets: dict[float, dict[str, Any]] = {}
    for p in points:
        key, low, high = grouping.key(p.lr)
        bucket = buckets.setdefault(
            key, {"lr": key, "low": low, "high": high, "n": 0, "div": 0, "seeds": {}}
        )
        if grouping.mode == "exact":
            bucket["lr"] = bucket["low"] = bucket["high"] = (
                p.lr if bucket["n"] == 0 else min(bucket["lr"], p.lr)
            )
        bucket["n"] += 1
        bucket["div"] += int(p.diverged)
        total, count = bucket["seeds"].get(p.seed, (0.0, 0))
        bucket["seeds"][p.seed] = (total + p.accuracy, count + 1)
    groups = []
    for key in sorted(buckets):
        b = buckets[key]
        seeds = tuple(sorted(b["seeds"]))
        sums = tuple(b["seeds"][s][0] for s in seeds)
        counts = tuple(b["seeds"][s][1] for s in seeds)
        groups.append(
            LrGroup(
                lr=b["lr"],
                lr_low=b["low"],
                lr_high=b["high"],
                n_trials=b["n"],
                n_diverged=b["div"],
                mean=sum(sums) / sum(counts),
                seeds=seeds,
                seed_sums=sums,
                seed_counts=counts,
            )
        )
    return groups


def best_of(means: np.ndarray, lrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `means` (curves x groups): the best group mean and its lr.

    Ties go to the smaller lr (the first maximum), so the answer is deterministic.
    """
    means = np.atleast_2d(means)
    index = np.argmax(means, axis=1)
    return means[np.arange(means.shape[0]), index], np.asarray(lrs, dtype=float)[index]


def window_decades(
    means: np.ndarray, lrs: np.ndarray, best: np.ndarray, tolerance: float
) -> np.ndarray:
    """Per row: the longest contiguous run of groups with mean >= best - tolerance, in decades.

    Groups are assumed sorted by lr; the run's length is log10(last lr) -
    log10(first lr), so a single group is 0 and unevenly spaced grids are
    measured by the lrs they actually cover, not by how many groups they have.
    A tiny slack (1e-12) keeps the best group itself inside despite rounding.
    A group at accuracy 0 (every trial diverged) is never in a window: a variant
    that diverged everywhere has no window, not one spanning the whole range.
    """
    means = np.atleast_2d(means)
    log_lrs = np.log10(np.asarray(lrs, dtype=float))
    ok = (means >= (np.asarray(best, dtype=float)[:, None] - tolerance - 1e-12)) & (means > 0)
    positions = np.arange(means.shape[1])
    last_bad = np.maximum.accumulate(np.where(ok, -1, positions), axis=1)
    start = np.clip(last_bad + 1, 0, means.shape[1] - 1)
    spans = np.where(ok, log_lrs[None, :] - log_lrs[start], -np.inf)
    return np.maximum(spans.max(axis=1), 0.0)


def area_under_curve(means: np.ndarray, lrs: np.ndarray) -> np.ndarray:
    """Per row: trapezoid integral of the means over log10(lr) / the log10 span.

    A normalized area is the mean accuracy over the studied lr range, weighting
    each decade equally; with a single group it is that group's mean.
    """
    means = np.atleast_2d(np.asarray(means, dtype=float))
    log_lrs = np.log10(np.asarray(lrs, dtype=float))
    if log_lrs.size < 2 or log_lrs[-1] == log_lrs[0]:
        return means.mean(axis=1)
    widths = np.diff(log_lrs)
    area = ((means[:, 1:] + means[:, :-1]) * 0.5 * widths[None, :]).sum(axis=1)
    return area / (log_lrs[-1] - log_lrs[0])


def max_stable_lr(groups: Sequence[LrGroup]) -> float | None:
    """The largest group lr at which no trial diverged (None if every group had one)."""
    stable = [g.lr for g in groups if g.n_diverged == 0]
    return max(stable) if stable else None


def divergence_rate(points: Sequence[TrialPoint]) -> float:
    """Diverged trials / trials (0 for no trials)."""
    return sum(p.diverged for p in points) / len(points) if points else 0.0
