"""Bootstrap intervals for the robustness metrics, resampling seeds within each lr group.

Seeds are the unit of replication: two trials with the same seed (different
eps, say) share their data order and initialization, so they are resampled
together as one cluster. Each lr group is resampled independently (the seeds of
different lrs are different runs), and the metric is recomputed from the
resampled group means. A fixed RNG seed makes a report reproducible run to run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from study.analysis.metrics import LrGroup

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


def resample_group_means(
    groups: Sequence[LrGroup], n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_resamples, n_groups) bootstrap group means, each from seeds drawn with replacement.

    A resampled group mean is sum(accuracy of the drawn seeds' trials) /
    count(those trials), which equals the group's plain mean when the draw is
    the original sample.
    """
    out = np.empty((n_resamples, len(groups)), dtype=float)
    for j, group in enumerate(groups):
        sums = np.asarray(group.seed_sums, dtype=float)
        counts = np.asarray(group.seed_counts, dtype=float)
        draws = rng.integers(0, sums.size, size=(n_resamples, sums.size))
        out[:, j] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return out


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of a bootstrap distribution."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.asarray(samples, dtype=float), [tail, 100.0 - tail])
    return float(low), float(high)
