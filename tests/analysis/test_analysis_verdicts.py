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
    assert verdicts(_report(pts))[0] == (
        "Best accuracy: all variants tie: sgd (90.00% at lr 0.1) and insgd-l2 (90.00% at lr 1); "
        "one seed only, so no intervals."
    )
    pts += [TrialPoint("insgd-l1", 0.1, 0.4), TrialPoint("insgd-l1", 1.0, 0.0, diverged=True)]
    best, window, stable, divergence, auc = verdicts(_report(pts))
    assert best == (
        "Best accuracy: sgd (90.00% at lr 0.1) and insgd-l2 (90.00% at lr 1) lead "
        "(insgd-l1 40.00% at lr 0.1); one seed only, so no intervals."
    )
    assert window.startswith(
        "LR window (lrs within 1 accuracy point of the variant's best): "
        "all variants tie at 0.00 decades"
    )
    assert stable == (
        "Max stable lr: insgd-l2 leads with lr 1 at 90.00% accuracy "
        "(sgd lr 0.1 at 90.00% accuracy, insgd-l1 lr 0.1 at 40.00% accuracy)."
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
    assert len(lines) == 10 and lines[0].startswith("[a/x] Best accuracy")
    assert lines[5].startswith("[a/x no-BN] Best accuracy")
    text = render_text(report)
    assert "insgd-l1 [a/x no-BN]" in text
    assert "Accuracy (%) by learning rate, mean +-std over seeds [a/x no-BN]:" in text
    assert "| sgd [a/x] | 2 | 1 | 80.00% |" in render_markdown(report)
