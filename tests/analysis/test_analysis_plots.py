"""The figures: only those with data are drawn, each a real PNG."""

from __future__ import annotations

from study.analysis.metrics import TrialPoint
from study.analysis.plots import FIGURE_FILES, render_figures
from study.analysis.summary import analyze_points


def test_sgd_only_without_curves_gives_the_accuracy_and_range_figures(tmp_path):
    pts = [
        TrialPoint("sgd", lr, acc, diverged=acc == 0.0, seed=s)
        for lr, acc in ((0.1, 0.8), (1.0, 0.5), (10.0, 0.0))
        for s in (0, 1)
    ]
    written = render_figures(analyze_points(pts), {}, tmp_path)
    assert list(written) == ["accuracy_vs_lr", "range_widths"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [FIGURE_FILES["accuracy_vs_lr"], FIGURE_FILES["range_widths"]]
    )
    assert written["accuracy_vs_lr"].read_bytes()[:4] == b"\x89PNG"


def test_eps_and_learning_curve_figures_when_there_is_data(tmp_path):
    pts = [
        TrialPoint("insgd-l1", lr, 0.7, seed=0, eps=eps, trial_number=i)
        for i, (lr, eps) in enumerate([(0.1, 0.01), (0.1, 0.1), (1.0, 0.01)])
    ]
    curves = {
        "insgd-l1 (trial 0, lr 0.1)": [
            {
                "epoch": 1,
                "val_accuracy": 0.5,
                "train_loss": None,
            },  # a missing loss is drawn as a gap
            {"epoch": 2, "val_accuracy": 0.7, "train_loss": 0.4},
        ]
    }
    written = render_figures(analyze_points(pts), curves, tmp_path)
    assert list(written) == ["accuracy_vs_lr", "range_widths", "eps_sensitivity", "learning_curves"]
    assert all(p.stat().st_size > 5000 for p in written.values())


def test_log_axes_are_labelled_in_plain_numbers_minor_ticks_too_within_a_decade():
    """Plain text, not mathtext (its parser cost more than the rest of a figure), and the
    same ticks labelled as matplotlib's own formatter: decades, and minor ticks on short
    axes."""
    from matplotlib.figure import Figure

    from study.analysis.plots import _log_x

    def labels(low: float, high: float) -> list[str]:
        fig = Figure(figsize=(6, 2))
        ax = fig.subplots()
        ax.plot([low, high], [0, 1])
        _log_x(ax)
        ax.set_xlim(low, high)
        fig.canvas.draw()
        ticks = ax.get_xticklabels() + ax.get_xticklabels(minor=True)
        return [t.get_text() for t in ticks if t.get_text()]

    wide = labels(1e-3, 10)
    assert {"0.001", "0.01", "0.1", "1", "10"} <= set(wide)
    assert not any("$" in t for t in wide)
    assert "1e\u22128" in labels(1e-9, 1e-7)  # with a typographic minus
    narrow = labels(0.012, 0.09)  # no decade inside: minor ticks carry the labels
    assert "0.02" in narrow and len(set(narrow) - {"0.01", "0.1"}) >= 3
