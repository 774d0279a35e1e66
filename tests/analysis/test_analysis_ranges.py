"""Chance-aware lr ranges on hand-made curves whose ends are worked out by hand.

Most curves sit on LRS = 0.01, 0.1, 1, 10 (log10 = -2, -1, 0, 1) with chance
0.1 (10 classes), so a crossing between two adjacent groups is
log10(lr_in) + (m_in - t) / (m_in - m_out) * (log10(lr_out) - log10(lr_in)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.analysis.ranges import (
    DEFAULT_LEVELS,
    LrRange,
    best_lr_shift_decades,
    chance_level,
    compare_widths,
    is_at_chance_rows,
    lr_range,
    lr_range_rows,
    lr_ranges,
    max_trainable_lr,
)

LRS = (0.01, 0.1, 1.0, 10.0)
CHANCE = 0.1


def _range(means, level=0.5, lrs=LRS, chance=CHANCE, **kw) -> LrRange:
    return lr_range(np.asarray(means, dtype=float), lrs, chance, level, **kw)


def _ends(r: LrRange) -> tuple[float, float]:
    return math.log10(r.lr_low), math.log10(r.lr_high)


def test_interpolated_crossings_match_the_hand_computation():
    # best 0.9 at lr 1; q=0.5: t = 0.1 + 0.5 * 0.8 = 0.5.
    # low: 0.7 (lr 0.1) -> 0.1 (lr 0.01): -1 - (0.7-0.5)/(0.7-0.1) = -1 - 1/3 = -4/3
    # high: 0.9 (lr 1) -> 0.3 (lr 10):      0 + (0.9-0.5)/(0.9-0.3) = 2/3
    r = _range([0.1, 0.7, 0.9, 0.3], 0.5)
    assert _ends(r) == pytest.approx((-4 / 3, 2 / 3))
    assert r.decades == pytest.approx(2.0)
    assert r.lr_low == pytest.approx(10 ** (-4 / 3))
    assert (r.censored_low, r.censored_high, r.at_chance) == (False, False, False)
    # q=0.9: t = 0.1 + 0.9 * 0.8 = 0.82, so 0.7 is now below:
    # low: 0.9 (lr 1) -> 0.7 (lr 0.1): 0 - (0.9-0.82)/(0.9-0.7) = -0.4
    # high: 0.9 -> 0.3: (0.9-0.82)/0.6 = 2/15
    r9 = _range([0.1, 0.7, 0.9, 0.3], 0.9)
    assert _ends(r9) == pytest.approx((-0.4, 2 / 15))
    assert r9.decades == pytest.approx(2 / 15 + 0.4)
    assert r9.to_json_dict() == {
        "decades": r9.decades,
        "lr_low": r9.lr_low,
        "lr_high": r9.lr_high,
        "censored_low": False,
        "censored_high": False,
    }


def test_uneven_lr_spacing_is_measured_in_log10_lr_not_in_groups():
    # lrs 3e-3, 3e-2, 3 (log10 3 = L: L-3, L-2, L); best 0.9 at 3e-2, t = 0.5.
    # high: 0.9 -> 0.3 over 2 decades: L-2 + (0.4/0.6) * 2; low censored at L-3.
    r = _range([0.8, 0.9, 0.3], 0.5, lrs=(3e-3, 3e-2, 3.0))
    log3 = math.log10(3)
    assert _ends(r) == pytest.approx((log3 - 3, log3 - 2 + 4 / 3))
    assert r.decades == pytest.approx(1 + 4 / 3)
    # A censored end is the studied lr itself, bit for bit (10 ** log10(3e-3) is not).
    assert r.lr_low == 3e-3
    assert _range([0.8, 0.9, 0.9], 0.5, lrs=(3e-3, 3e-2, 0.3)).lr_high == 0.3


def test_monotone_rising_curve_is_censored_high():
    # best 0.8 at lr 10, t = 0.1 + 0.5 * 0.7 = 0.45; low: 0.6 (lr 1) -> 0.4 (lr 0.1):
    # 0 - (0.6-0.45)/(0.6-0.4) = -0.75; high is the last lr studied.
    r = _range([0.2, 0.4, 0.6, 0.8])
    assert _ends(r) == pytest.approx((-0.75, 1.0))
    assert r.lr_high == 10.0
    assert (r.censored_low, r.censored_high) == (False, True)
    assert r.censored


def test_monotone_falling_curve_is_censored_low():
    # Mirror image: best 0.8 at lr 0.01; high: 0.6 (lr 0.1) -> 0.4 (lr 1): -1 + 0.75.
    r = _range([0.8, 0.6, 0.4, 0.2])
    assert _ends(r) == pytest.approx((-2.0, -0.25))
    assert r.lr_low == 0.01
    assert (r.censored_low, r.censored_high) == (True, False)


def test_peaked_curve_censored_on_the_low_side_only():
    # best 0.9 at lr 0.1 and lr 0.01 still at 0.85 >= 0.5: censored low; the high end
    # crosses between 0.6 (lr 1) and 0.2 (lr 10): 0 + (0.6-0.5)/(0.6-0.2) = 0.25.
    r = _range([0.85, 0.9, 0.6, 0.2])
    assert _ends(r) == pytest.approx((-2.0, 0.25))
    assert (r.censored_low, r.censored_high) == (True, False)


def test_plateau_is_censored_on_both_sides():
    r = _range([0.9, 0.9, 0.9, 0.9], 0.95)
    assert r.decades == pytest.approx(3.0)
    assert (r.lr_low, r.lr_high) == (0.01, 10.0)
    assert (r.censored_low, r.censored_high, r.at_chance) == (True, True, False)


def test_a_dip_ends_the_range_and_a_later_recovery_does_not_count():
    # best 0.95 at lr 10, t = 0.1 + 0.5 * 0.85 = 0.525; the dip to 0.3 at lr 0.1 ends it:
    # low: 0.9 (lr 1) -> 0.3 (lr 0.1): 0 - (0.9-0.525)/(0.9-0.3) = -0.625.
    # lr 0.01 is back at 0.9, but counting it would give 3 decades censored low.
    r = _range([0.9, 0.3, 0.9, 0.95])
    assert _ends(r) == pytest.approx((-0.625, 1.0))
    assert r.decades == pytest.approx(1.625)
    assert (r.censored_low, r.censored_high) == (False, True)


def test_all_diverged_groups_count_as_zero_and_end_the_range():
    # Diverged groups at both ends (passed as 0.0), t = 0.5:
    # low: 0.8 -> 0.0: -1 - 0.3/0.8 = -1.375; high: 0.9 -> 0.0: 0 + 0.4/0.9 = 4/9.
    # Were a 0 skipped as missing, both sides would be censored.
    r = _range([0.0, 0.8, 0.9, 0.0])
    assert _ends(r) == pytest.approx((-1.375, 4 / 9))
    assert (r.censored_low, r.censored_high, r.at_chance) == (False, False, False)


def test_a_variant_that_diverged_everywhere_is_at_chance_not_a_range():
    r = _range([0.0, 0.0, 0.0, 0.0])
    assert r.at_chance
    assert r.decades == 0.0
    assert r.lr_low == r.lr_high == 0.01
    assert not r.censored


def test_one_lr_only_is_width_zero_censored_on_both_sides():
    r = lr_range([0.7], [0.1], CHANCE, 0.9)
    assert (r.decades, r.lr_low, r.lr_high) == (0.0, 0.1, 0.1)
    assert (r.censored_low, r.censored_high, r.at_chance) == (True, True, False)


def test_at_chance_everywhere_is_flagged_with_width_zero_at_the_best_lr():
    # A flat curve at chance would otherwise be a 3-decade range censored on both sides.
    flat = _range([0.1, 0.1, 0.1, 0.1])
    assert flat.at_chance and flat.decades == 0.0
    assert flat.lr_low == flat.lr_high == 0.01  # tie -> lowest lr
    assert (flat.censored_low, flat.censored_high) == (False, False)
    below = _range([0.05, 0.08, 0.02, 0.0])
    assert below.at_chance and below.lr_low == below.lr_high == 0.1
    # A float-noise mean of chance (0.1 as a sum of thirds) is still at chance.
    assert _range([0.1, (0.1 + 0.1 + 0.1) / 3, 0.1, 0.1]).at_chance


def test_min_gain_declares_a_noise_level_gain_at_chance():
    noisy = [0.098, 0.103, 0.101, 0.099]
    assert not _range(noisy).at_chance
    r = _range(noisy, min_gain=0.01)
    assert r.at_chance and r.decades == 0.0 and r.lr_low == 0.1
    assert is_at_chance_rows(
        np.array([noisy, [0.1, 0.5, 0.2, 0.1]]), CHANCE, min_gain=0.01
    ).tolist() == [
        True,
        False,
    ]


def test_ties_for_best_go_to_the_lowest_lr():
    # 0.9 at lr 0.01 and at lr 1, separated by a dip: the range sits around lr 0.01.
    # t = 0.5; high: 0.9 (lr 0.01) -> 0.2 (lr 0.1): -2 + 0.4/0.7.
    r = _range([0.9, 0.2, 0.9, 0.2])
    assert _ends(r) == pytest.approx((-2.0, -2 + 4 / 7))
    assert (r.censored_low, r.censored_high) == (True, False)


def test_group_order_does_not_matter():
    means = [0.1, 0.7, 0.9, 0.3]
    order = [2, 0, 3, 1]
    shuffled = lr_range(np.take(means, order), np.take(LRS, order), CHANCE, 0.5)
    assert shuffled == _range(means)


def _reference(means, lrs, chance, level):
    """A loop-by-loop walk out from the best group: an independent statement of the spec."""
    order = sorted(range(len(lrs)), key=lambda k: lrs[k])
    m = [means[k] for k in order]
    x = [math.log10(lrs[k]) for k in order]
    b = max(range(len(m)), key=lambda k: (m[k], -k))
    best = m[b]
    if best <= chance + 1e-12:
        return 0.0, x[b], x[b], False, False
    t = chance + level * (best - chance)

    def walk(step):
        i = b
        while 0 <= i + step < len(m):
            j = i + step
            if m[j] < t - 1e-12:
                return x[i] + (m[i] - t) / (m[i] - m[j]) * (x[j] - x[i]), False
            i = j
        return x[i], True

    low, c_low = walk(-1)
    high, c_high = walk(+1)
    return high - low, low, high, c_low, c_high


def test_vectorized_rows_equal_the_scalar_and_the_reference_row_by_row():
    rng = np.random.default_rng(7)
    lrs = (1e-3, 3e-3, 1e-2, 0.1, 0.3, 1.0, 10.0)
    means = rng.uniform(0.0, 1.0, size=(200, len(lrs)))
    means[rng.uniform(size=means.shape) < 0.15] = 0.0  # diverged groups
    means[::10] = np.round(means[::10], 1)  # ties for best
    means[5] = 0.1  # at chance
    means[6] = 0.95  # plateau
    for level in DEFAULT_LEVELS:
        rows = lr_range_rows(means, lrs, CHANCE, level)
        assert all(a.shape == (200,) for a in rows)
        want = [_reference(list(row), lrs, CHANCE, level) for row in means]
        for field, (got, expected) in enumerate(zip(rows, zip(*want, strict=True), strict=True)):
            np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"{level} {field}")
        scalars = [lr_range(row, lrs, CHANCE, level) for row in means]
        np.testing.assert_allclose([r.decades for r in scalars], rows.decades, atol=1e-12)
        np.testing.assert_array_equal([r.censored_low for r in scalars], rows.censored_low)
        np.testing.assert_array_equal([r.censored_high for r in scalars], rows.censored_high)
        np.testing.assert_allclose(np.log10([r.lr_low for r in scalars]), rows.log_low)


def test_lr_ranges_gives_one_range_per_level_in_order():
    ranges = lr_ranges([0.1, 0.7, 0.9, 0.3], LRS, CHANCE)
    assert [r.level for r in ranges] == list(DEFAULT_LEVELS)
    assert ranges[0].decades > ranges[1].decades > ranges[2].decades  # higher level, narrower


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"chance": 1.0}, "chance"),
        ({"means": [0.5, float("nan"), 0.1, 0.1]}, "finite"),
        ({"lrs": (0.01, 0.1, 0.1, 1.0)}, "distinct"),
        ({"lrs": (0.01, 0.1, 1.0)}, "means must be"),
    ],
)
def test_bad_inputs_are_refused(kwargs, message):
    args = {"means": [0.1, 0.7, 0.9, 0.3], "lrs": LRS, "chance": CHANCE, "level": 0.5} | kwargs
    with pytest.raises(ValueError, match=message):
        lr_range(args["means"], args["lrs"], args["chance"], args["level"])


def test_chance_level_is_one_over_the_classes():
    assert chance_level(10) == 0.1
    with pytest.raises(ValueError):
        chance_level(0)


def test_max_trainable_lr_skips_a_group_where_a_trial_diverged():
    # best 0.9, 50% level 0.5; lr 1 reaches 0.7 but one of its trials diverged.
    assert max_trainable_lr(LRS, [0.6, 0.9, 0.7, 0.0], [0, 0, 1, 3], CHANCE, 0.9) == 0.1


def test_max_trainable_lr_skips_a_group_below_the_half_gain_level():
    # Nothing diverged, but lr 1 (0.4) and lr 10 (0.45) are below 0.5.
    assert max_trainable_lr(LRS, [0.6, 0.9, 0.4, 0.45], [0, 0, 0, 0], CHANCE, 0.9) == 0.1
    # Exactly at the level counts; lrs need not be sorted nor contiguous with the best.
    assert max_trainable_lr((10.0, 0.01, 1.0), [0.5, 0.9, 0.3], [0, 0, 0], CHANCE, 0.9) == 10.0


def test_max_trainable_lr_is_none_when_nothing_trains():
    assert max_trainable_lr(LRS, [0.0] * 4, [2] * 4, CHANCE, 0.0) is None
    assert max_trainable_lr(LRS, [0.6, 0.9, 0.7, 0.6], [1] * 4, CHANCE, 0.9) is None
    # Stable everywhere but at chance: no diverged trial, yet nothing is trainable.
    assert max_trainable_lr(LRS, [0.1] * 4, [0] * 4, CHANCE, 0.1) is None


def test_best_lr_shift_is_the_log10_difference():
    assert best_lr_shift_decades(1.0, 0.01) == pytest.approx(2.0)
    assert best_lr_shift_decades(0.01, 0.1) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        best_lr_shift_decades(0.0, 0.1)


def _r(decades, low=False, high=False, at_chance=False, level=0.5) -> LrRange:
    return LrRange(level, decades, 0.01, 0.01 * 10**decades, low, high, at_chance)


def test_width_difference_with_neither_side_censored():
    d = compare_widths(_r(2.0), _r(1.0), (0.4, 1.6))
    assert (d.difference, d.bound, d.comparable, d.clear) == (1.0, None, True, True)
    assert compare_widths(_r(1.0), _r(2.0), (-1.6, -0.4)).clear  # a clear loss is clear too
    assert not compare_widths(_r(2.0), _r(1.0), (-0.1, 1.6)).clear
    assert not compare_widths(_r(2.0), _r(1.0), None).clear
    assert d.to_json_dict() == {
        "difference": 1.0,
        "interval": [0.4, 1.6],
        "bound": None,
        "comparable": True,
        "clear": True,
    }


@pytest.mark.parametrize("side", ["low", "high"])
def test_a_censored_variant_gives_a_lower_bound_clear_only_when_positive(side):
    variant = _r(2.0, low=side == "low", high=side == "high")
    win = compare_widths(variant, _r(1.0), (0.4, 1.6))
    assert (win.bound, win.comparable, win.clear) == ("at_least", True, True)
    loss = compare_widths(_r(1.0, high=True), _r(2.0), (-1.6, -0.4))
    assert (loss.bound, loss.clear) == ("at_least", False)


@pytest.mark.parametrize("side", ["low", "high"])
def test_a_censored_baseline_gives_an_upper_bound_clear_only_when_negative(side):
    baseline = _r(1.0, low=side == "low", high=side == "high")
    win = compare_widths(_r(2.0), baseline, (0.4, 1.6))
    assert (win.bound, win.comparable, win.clear) == ("at_most", True, False)
    loss = compare_widths(_r(0.5), _r(2.0, low=True), (-2.0, -1.0))
    assert (loss.bound, loss.clear) == ("at_most", True)


def test_both_censored_or_either_at_chance_is_not_comparable():
    both = compare_widths(_r(3.0, high=True), _r(1.0, low=True), (1.5, 2.5))
    assert (both.bound, both.comparable, both.clear) == (None, False, False)
    for variant, baseline in [
        (_r(0.0, at_chance=True), _r(2.0)),
        (_r(2.0), _r(0.0, at_chance=True)),
    ]:
        d = compare_widths(variant, baseline, (1.0, 3.0) if baseline.at_chance else (-3.0, -1.0))
        assert (d.bound, d.comparable, d.clear) == (None, False, False)


def test_widths_at_different_levels_are_refused():
    with pytest.raises(ValueError, match="levels"):
        compare_widths(_r(1.0, level=0.5), _r(1.0, level=0.9), (0.1, 0.2))


def test_bootstrap_rows_give_a_width_distribution_in_one_call():
    # Rows that are the point curve plus small noise: widths scatter around the point width.
    rng = np.random.default_rng(0)
    point = np.array([0.1, 0.7, 0.9, 0.3])
    boot = np.clip(point + rng.normal(0.0, 0.01, size=(2000, 4)), 0.0, 1.0)
    widths = lr_range_rows(boot, LRS, CHANCE, 0.5).decades
    assert widths.shape == (2000,)
    assert np.median(widths) == pytest.approx(2.0, abs=0.05)
