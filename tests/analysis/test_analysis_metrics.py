"""The robustness metrics on hand-made numbers whose answers are worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from study.analysis.bootstrap import percentile_interval, resample_group_means
from study.analysis.metrics import (
    Grouping,
    TrialPoint,
    area_under_curve,
    best_of,
    choose_grouping,
    group_by_lr,
    max_stable_lr,
    point_from_row,
    variant_name,
    window_decades,
)
from study.analysis.summary import analyze_points, best_trial


def _curve(variant: str, lrs, means, seeds=(0,), diverged_at=(), state="COMPLETE", jitter=0.0):
    """Points whose per-lr mean over seeds is exactly `means` (seed offsets cancel out)."""
    points = []
    offsets = np.linspace(-jitter, jitter, len(seeds)) if len(seeds) > 1 else [0.0]
    n = 0
    for lr, mean in zip(lrs, means, strict=True):
        for seed, off in zip(seeds, offsets, strict=True):
            div = lr in diverged_at
            points.append(
                TrialPoint(variant, lr, 0.0 if div else mean + off, div, seed, None, state, n)
            )
            n += 1
    return points


def test_variant_names_keep_different_algorithms_apart():
    assert variant_name("sgd", "none") == "sgd"
    assert variant_name("sgd", "l2", "nlms") == "sgd"  # the normalizer means nothing for SGD
    assert variant_name("insgd", "l1") == "insgd-l1"
    assert variant_name("insgd", "l2", "nlms") == "insgd-l2-nlms"
    assert variant_name("insgd", "l2", "log", "channel") == "insgd-l2-channel"


def test_adapter_counts_a_diverged_trial_as_zero_and_drops_eps_for_sgd():
    row = SimpleNamespace(
        optimizer="insgd",
        norm="l2",
        normalizer="log",
        granularity="layer",
        lr=0.5,
        final_val_accuracy=0.42,
        diverged=True,
        seed=3,
        eps=0.01,
        state="COMPLETE",
        trial_number=7,
    )
    p = point_from_row(row)
    assert (p.variant, p.accuracy, p.diverged, p.seed, p.eps, p.trial_number) == (
        "insgd-l2",
        0.0,
        True,
        3,
        0.01,
        7,
    )
    sgd = point_from_row(
        SimpleNamespace(
            **{
                **vars(row),
                "optimizer": "sgd",
                "norm": "none",
                "diverged": False,
                "final_val_accuracy": 0.9,
            }
        )
    )
    assert (sgd.variant, sgd.accuracy, sgd.eps) == ("sgd", 0.9, None)


def test_grid_studies_group_by_exact_lr_and_others_by_log_bins():
    assert choose_grouping([0.01, 0.1, 0.1000000000001, 1.0], bins=8).mode == "exact"
    assert choose_grouping(np.geomspace(1e-3, 1, 20), bins=8, grid=True).mode == "exact"
    g = choose_grouping(np.geomspace(1e-3, 1, 20), bins=3)
    assert g.mode == "log-bins"
    assert np.allclose(g.edges, [1e-3, 1e-2, 1e-1, 1.0])
    # the bin's representative lr is its geometric centre; the top edge belongs to the last bin
    assert g.key(0.05) == pytest.approx((math.sqrt(1e-3), 1e-2, 1e-1))
    assert g.key(1.0)[0] == pytest.approx(math.sqrt(0.1))
    with pytest.raises(ValueError, match="bins"):
        choose_grouping([0.1, 1.0], bins=1)


def test_groups_average_over_seeds_and_eps():
    pts = [
        TrialPoint("insgd-l2", 0.1, 0.8, seed=0, eps=0.01),
        TrialPoint("insgd-l2", 0.1, 0.6, seed=0, eps=0.1),
        TrialPoint("insgd-l2", 0.1, 0.4, seed=1, eps=0.01),
        TrialPoint("insgd-l2", 1.0, 0.0, diverged=True, seed=0),
    ]
    g01, g1 = group_by_lr(pts, Grouping("exact"))
    assert (g01.lr, g01.n_trials, g01.seeds, g01.mean) == (0.1, 3, (0, 1), pytest.approx(0.6))
    assert g01.seed_means.tolist() == pytest.approx([0.7, 0.4])
    assert (g1.n_diverged, g1.std) == (1, 0.0)
    assert max_stable_lr([g01, g1]) == 0.1
    assert max_stable_lr([g1]) is None


def test_window_is_the_longest_run_near_the_best_measured_in_decades():
    lrs = np.array([1e-3, 1e-2, 1e-1, 1.0])
    means = np.array([[0.5, 0.9, 0.895, 0.3]])
    best, best_lr = best_of(means, lrs)
    assert (best[0], best_lr[0]) == (0.9, 1e-2)
    assert window_decades(means, lrs, best, 0.01)[0] == pytest.approx(1.0)
    assert window_decades(means, lrs, best, 0.0)[0] == 0.0  # only the best group itself
    # two runs: 3 groups over 0.2 decades vs 2 groups over 2 decades -> 2 decades wins
    lrs2 = np.array([0.1, 0.125, 0.158, 1.0, 10.0, 1000.0])
    means2 = np.array([[0.9, 0.9, 0.9, 0.1, 0.9, 0.9]])
    assert window_decades(means2, lrs2, np.array([0.9]), 0.01)[0] == pytest.approx(2.0)
    # diverged everywhere (all zeros) is no window at all, not the whole range
    zeros = np.zeros((1, 4))
    assert window_decades(zeros, lrs, np.array([0.0]), 0.01)[0] == 0.0
    # vectorised over rows: each row gets its own answer
    both = np.vstack([means[0], [0.9, 0.9, 0.9, 0.9]])
    assert window_decades(both, lrs, np.array([0.9, 0.9]), 0.01).tolist() == pytest.approx(
        [1.0, 3.0]
    )


def test_auc_is_the_mean_accuracy_per_decade():
    lrs = np.array([0.01, 0.1, 1.0])
    assert area_under_curve(np.array([[0.2, 0.8, 0.8]]), lrs)[0] == pytest.approx(
        (0.5 * (0.2 + 0.8) + 0.8) / 2
    )
    # uneven spacing is weighted by decades, not by group count
    assert area_under_curve(np.array([[0.0, 1.0]]), np.array([0.01, 1.0]))[0] == 0.5
    assert area_under_curve(np.array([[0.7]]), np.array([0.1]))[0] == pytest.approx(0.7)


def test_bootstrap_resamples_whole_seeds_within_each_group():
    pts = _curve("sgd", [0.1], [0.5], seeds=(0, 1, 2), jitter=0.1) + [
        TrialPoint("sgd", 1.0, 0.3, seed=s) for s in (0, 1)
    ]
    groups = group_by_lr(pts, Grouping("exact"))
    boot = resample_group_means(groups, 5000, np.random.default_rng(0))
    assert boot.shape == (5000, 2)
    # a resample is a mean of 3 values drawn from {0.4, 0.5, 0.6}: within their range
    assert boot[:, 0].min() >= 0.4 - 1e-12 and boot[:, 0].max() <= 0.6 + 1e-12
    assert boot[:, 0].mean() == pytest.approx(0.5, abs=0.005)
    assert np.all(boot[:, 1] == pytest.approx(0.3))  # identical seeds: no spread
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))


def test_analysis_excludes_unfinished_trials_and_gives_intervals_with_seeds():
    lrs = [0.01, 0.1, 1.0, 10.0]
    pts = (
        _curve(
            "sgd",
            lrs,
            [0.905, 0.91, 0.50, 0.10],
            seeds=(0, 1, 2),
            diverged_at=(10.0,),
            jitter=0.002,
        )
        + _curve("insgd-l2", lrs, [0.905, 0.91, 0.905, 0.60], seeds=(0, 1, 2), jitter=0.002)
        + _curve("insgd-l2", [100.0], [0.99], state="PRUNED")
        + _curve("insgd-l1", [0.1], [0.2], state="FAIL")
    )
    a = analyze_points(pts, tolerance=0.01)
    assert [v.variant for v in a.variants] == ["sgd", "insgd-l2"]
    sgd, l2 = a.variants
    assert (sgd.n_trials, sgd.best_accuracy, sgd.best_lr) == (12, pytest.approx(0.91), 0.1)
    assert sgd.lr_window_decades == pytest.approx(1.0)
    assert l2.lr_window_decades == pytest.approx(2.0)
    assert (sgd.max_stable_lr, l2.max_stable_lr) == (1.0, 10.0)
    assert (sgd.divergence_rate, l2.divergence_rate) == (pytest.approx(0.25), 0.0)
    assert l2.auc > sgd.auc
    for v in (sgd, l2):
        for metric in ("best_accuracy", "lr_window_decades"):
            iv = v.intervals[metric]
            assert iv.low <= iv.estimate + 1e-9 and iv.high >= iv.estimate - 1e-9
    (cmp,) = a.comparisons
    assert cmp.variant == "insgd-l2" and cmp.baseline == "sgd"
    window = cmp.differences["lr_window_decades"]
    # seed noise (+-0.002) is far below the margins (0.005): every resample agrees
    assert (window.estimate, window.low, window.high) == pytest.approx((1.0, 1.0, 1.0))
    assert window.excludes_zero()
    assert not cmp.differences["best_accuracy"].excludes_zero()
    # fixed RNG seed: the same report twice
    again = analyze_points(pts, tolerance=0.01)
    assert again.variants[1].intervals == l2.intervals
    assert best_trial(l2.points).lr == 0.1


def test_one_seed_means_no_intervals_and_bad_input_is_refused():
    a = analyze_points(_curve("sgd", [0.1, 1.0], [0.8, 0.2]))
    assert a.variants[0].intervals is None and a.comparisons == []
    with pytest.raises(ValueError, match="tolerance"):
        analyze_points(_curve("sgd", [0.1], [0.8]), tolerance=1.0)
    with pytest.raises(ValueError, match="COMPLETE"):
        analyze_points(_curve("sgd", [0.1], [0.8], state="PRUNED"))


def test_trials_of_different_settings_are_never_pooled():
    pts = [
        TrialPoint(v, lr, acc, seed=s, setting=setting)
        for setting, drop in (("toy-cnn/cifar10", 0.0), ("toy-cnn/cifar10 no-BN", 0.5))
        for v in ("sgd", "insgd-l2")
        for lr, acc in ((0.1, 0.8), (1.0, 0.8 - drop))
        for s in (0, 1)
    ]
    a = analyze_points(pts)
    assert a.settings == ["toy-cnn/cifar10", "toy-cnn/cifar10 no-BN"]
    bn, nobn = a.variant("sgd", "toy-cnn/cifar10"), a.variant("sgd", "toy-cnn/cifar10 no-BN")
    assert (bn.n_trials, bn.lr_window_decades, nobn.lr_window_decades) == (4, 1.0, 0.0)
    assert a.label(nobn) == "sgd [toy-cnn/cifar10 no-BN]"
    assert [(c.variant, c.setting) for c in a.comparisons] == [
        ("insgd-l2", "toy-cnn/cifar10"),
        ("insgd-l2", "toy-cnn/cifar10 no-BN"),
    ]
    row = SimpleNamespace(
        optimizer="sgd",
        norm="none",
        lr=0.1,
        final_val_accuracy=0.5,
        model="toy-cnn",
        dataset="cifar10",
        params={"batchnorm": False},
    )
    assert point_from_row(row).setting == "toy-cnn/cifar10 no-BN"
