"""The verdict sentences and text tables, from hand-made analyses (no database)."""

from __future__ import annotations

from study.analysis.metrics import TrialPoint
from study.analysis.report import render_markdown, render_text, verdicts
from study.analysis.robustness import RobustnessReport
from study.analysis.summary import analyze_points


def _report(points) -> RobustnessReport:
    analysis = analyze_points(points)
    return RobustnessReport("s", 0.01, 8, analysis, {"COMPLETE": len(points)})


def test_a_tie_at_different_lrs_names_each_leaders_lr():
    pts = [
        TrialPoint("sgd", 0.1, 0.9),
        TrialPoint("sgd", 1.0, 0.0, diverged=True),
        TrialPoint("insgd-l2", 0.1, 0.5),
        TrialPoint("insgd-l2", 1.0, 0.9),
    ]
    assert verdicts(_report(pts))[1] == (
        "Best accuracy: all variants tie: sgd (90.00% at lr 0.1) and insgd-l2 (90.00% at lr 1); "
        "insgd-l2 - sgd = +0.00 points (one seed, no interval)."
    )
    pts += [TrialPoint("insgd-l1", 0.1, 0.4), TrialPoint("insgd-l1", 1.0, 0.0, diverged=True)]
    l1_range, l2_range, best, stable, divergence, auc = verdicts(_report(pts))
    assert best.startswith(
        "Best accuracy: sgd (90.00% at lr 0.1) and insgd-l2 (90.00% at lr 1) lead "
        "(insgd-l1 40.00% at lr 0.1); "
    )
    # sgd falls at the top, insgd-l2 rises to it: each range is censored on the far side,
    # so the widths cannot be compared and no verdict says who is wider
    assert l2_range == (
        "insgd-l2 keeps 90% of its gain over chance over \u2265 0.20 decades (lr 0.631-1, "
        "censored above) vs sgd \u2265 0.09 decades (lr 0.1-0.123, censored below); +0.11 "
        "decades, not comparable (censored or at chance on both sides); best lr 1.00 decades "
        "higher."
    )
    assert l1_range.startswith("insgd-l1 keeps 90% of its gain over chance over \u2265 0.")
    assert stable == (
        "Max trainable lr (no divergence, half the gain over chance kept): insgd-l2 leads with "
        "lr 1 at 90.00% accuracy (sgd lr 0.1 at 90.00% accuracy, insgd-l1 lr 0.1 at 40.00% "
        "accuracy)."
    )
    assert divergence == ("Divergence rate: insgd-l2 leads with 0.0% (sgd 50.0%, insgd-l1 50.0%).")
    assert auc.startswith("Accuracy averaged over the lr range (AUC): insgd-l2 leads with 70.0%")


def test_several_settings_get_a_verdict_block_each_and_labelled_rows():
    pts = [
        TrialPoint(v, lr, 0.8, setting=s)
        for s in ("a/x", "a/x no-BN")
        for v in ("sgd", "insgd-l1")
        for lr in (0.1, 1.0)
    ]
    report = _report(pts)
    lines = verdicts(report)
    assert len(lines) == 10 and lines[0].startswith("[a/x] insgd-l1 keeps 90%")
    assert lines[1].startswith("[a/x no-BN] insgd-l1 keeps 90%")
    assert lines[2].startswith("[a/x] Best accuracy")
    assert lines[6].startswith("[a/x no-BN] Best accuracy")
    text = render_text(report)
    assert "insgd-l1 [a/x no-BN]" in text
    assert "Accuracy (%) by learning rate, mean +-std over seeds [a/x no-BN]:" in text
    assert "| sgd [a/x] | 2 | 1 | 80.00% |" in render_markdown(report)


def _curve_points(variant, accs, seeds=(0, 1, 2), lrs=(0.01, 0.1, 1.0, 10.0)):
    # seeds at mean -+ 0.01 so every group has a spread to resample
    return [
        TrialPoint(variant, lr, max(0.0, acc + 0.01 * (s - 1)), seed=s, diverged=acc == 0.0)
        for lr, acc in zip(lrs, accs, strict=True)
        for s in seeds
    ]


def test_the_frozen_control_separates_adaptivity_from_the_rescale():
    pts = (
        _curve_points("sgd", [0.9, 0.5, 0.0, 0.0])
        + _curve_points("insgd-l2", [0.5, 0.9, 0.9, 0.5])
        + _curve_points("insgd-l2-frozen", [0.5, 0.9, 0.5, 0.1])
    )
    report = _report(pts)
    a = report.analysis
    pairs = [(c.variant, c.baseline) for c in a.comparisons]
    assert pairs == [
        ("insgd-l2", "sgd"),
        ("insgd-l2", "insgd-l2-frozen"),
        ("insgd-l2-frozen", "sgd"),
    ]
    adaptivity = a.comparisons[1].ranges["0.9"]
    l2, frozen = a.variant("insgd-l2"), a.variant("insgd-l2-frozen")
    # both ranges are inside the lrs studied: a measured difference with an interval
    assert not l2.ranges["0.9"].censored and not frozen.ranges["0.9"].censored
    assert adaptivity.difference == l2.ranges["0.9"].decades - frozen.ranges["0.9"].decades
    assert adaptivity.difference > 0.5 and adaptivity.clear and adaptivity.bound is None
    # sgd is censored below (best at the lowest lr): insgd-l2 minus sgd is an upper bound
    vs_sgd = a.comparisons[0].ranges["0.9"]
    assert a.variant("sgd").ranges["0.9"].censored_low and vs_sgd.bound == "at_most"
    lines = verdicts(report)
    assert len([s for s in lines if "keeps 90%" in s]) == 1  # the control speaks in l2's line
    sentence = lines[0]
    assert sentence.startswith("insgd-l2 keeps 90% of its gain over chance over ")
    assert "vs sgd \u2265 " in sentence and "censored below" in sentence
    assert "at most +" in sentence
    assert "best lr 1.00 decades higher" in sentence
    assert "its frozen control covers " in sentence
    assert "adaptivity adds +" in sentence and sentence.endswith("clearly wider.")


def test_a_variant_at_chance_does_not_learn_and_never_leads_on_trainable_lr():
    pts = _curve_points("sgd", [0.9, 0.8, 0.1, 0.1], seeds=(0,)) + _curve_points(
        "insgd-l1", [0.1, 0.1, 0.1, 0.1], seeds=(0,)
    )
    report = _report(pts)
    l1 = report.analysis.variant("insgd-l1")
    assert l1.ranges["0.9"].at_chance and l1.max_trainable_lr is None
    lines = verdicts(report)
    assert "insgd-l1 keeps 90% of its gain over chance over does not learn" not in lines[0]
    assert lines[0].startswith("insgd-l1 does not learn (best 9.00% vs chance 10.00%) vs sgd ")
    trainable = next(s for s in lines if s.startswith("Max trainable lr"))
    assert trainable.startswith(
        "Max trainable lr (no divergence, half the gain over chance kept): sgd leads"
    )
