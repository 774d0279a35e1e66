"""The report's figures, as PNG files (matplotlib's Agg backend: no display needed).

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so no
global figure state leaks between calls (reports are also made inside a
long-running launch) and nothing tries to open a window on a headless node.

They are drawn at the end of every launch, so they are built to be cheap: margins
fixed in inches (`_margins`) instead of a layout engine that measures every label,
and log axes labelled in plain numbers ("0.01", "1e-8") instead of mathtext, whose
parser costs more than the rest of a figure. Together that halves the drawing time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from study.analysis.metrics import is_insgd  # noqa: E402
from study.analysis.summary import Analysis, VariantSummary  # noqa: E402

FIGURE_FILES = {
    "accuracy_vs_lr": "accuracy_vs_lr.png",
    "range_widths": "range_widths.png",
    "eps_sensitivity": "eps_sensitivity.png",
    "learning_curves": "learning_curves.png",
}
_COLORS = {
    "sgd": "#444444",
    "insgd-l1": "#1f77b4",
    "insgd-l2": "#d62728",
    "insgd-l1-frozen": "#7fb3d9",
    "insgd-l2-frozen": "#f08a8b",
}
_FALLBACK = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
DPI = 110


def _margins(
    fig: Figure,
    *,
    left: float = 0.8,
    right: float = 0.25,
    bottom: float = 0.55,
    top: float = 0.4,
    wspace: float = 0.0,
    hspace: float = 0.0,
    rows: int = 1,
    cols: int = 1,
) -> None:
    """Fixed margins and gaps between axes, in inches (see the module docstring)."""
    width, height = fig.get_size_inches()
    axes_w = (width - left - right - (cols - 1) * wspace) / cols
    axes_h = (height - bottom - top - (rows - 1) * hspace) / rows
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace / axes_w,
        hspace=hspace / axes_h,
    )


def _log_x(ax: Any) -> None:
    ax.set_xscale("log")
    _plain_log_labels(ax.xaxis)


def _log_y(ax: Any) -> None:
    ax.set_yscale("log")
    _plain_log_labels(ax.yaxis)


class _PlainLogFormatter(LogFormatter):
    """Matplotlib's log formatter (which ticks get a label, minor ones too where the axis
    spans under a decade or two) writing plain numbers: 0.01, 0.2, 10, 1e-8."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.3g}".replace("e-0", "e-").replace("e+0", "e")


def _plain_log_labels(axis: Any) -> None:
    """Log-axis labels as plain text, not mathtext (see the module docstring)."""
    axis.set_major_formatter(_PlainLogFormatter())
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))


def color_for(variant: str) -> str:
    """A stable colour per variant: the same variant looks the same in every figure."""
    if variant in _COLORS:
        return _COLORS[variant]
    return _FALLBACK[sum(map(ord, variant)) % len(_FALLBACK)]


def plot_accuracy_vs_lr(analysis: Analysis, path: Path, title: str = "") -> Path:
    """Group mean accuracy vs lr per variant, the range over seeds as a band, diverged as x;
    each variant's lr range at the headline level drawn as a bracket at its threshold
    (an open arrow where the range is censored: it goes on past the lrs studied)."""
    settings = analysis.settings
    fig = Figure(figsize=(7.5, 4.2 * len(settings)), dpi=DPI)
    _margins(fig, rows=len(settings), hspace=0.9)
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    for ax, setting in zip(axes, settings, strict=True):
        shown = [v for v in analysis.variants if v.setting == setting]
        for v in shown:
            _draw_variant_curve(ax, v)
        for i, v in enumerate(shown):
            _draw_range_bracket(ax, v, analysis.headline_level, i, len(shown))
        _log_x(ax)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(
            f"learning rate  (brackets: range keeping {100 * float(analysis.headline_level):g}%"
            " of the gain over chance; arrow: censored)"
        )
        ax.set_ylabel("final validation accuracy")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(setting if len(settings) > 1 else (title or "accuracy vs learning rate"))
    fig.savefig(path)
    return path


def _draw_variant_curve(ax: Any, v: VariantSummary) -> None:
    color = color_for(v.variant)
    lrs = np.array([g.lr for g in v.groups])
    means = np.array([g.mean for g in v.groups])
    # the band is the range of the per-seed means: with 2-3 seeds a +-std band
    # overstates (and leaves [0, 1]) when one seed collapsed
    lows = np.array([g.seed_means.min() for g in v.groups])
    highs = np.array([g.seed_means.max() for g in v.groups])
    label = f"{v.variant} (n={v.n_trials}, {v.n_seeds} seed{'s' if v.n_seeds != 1 else ''})"
    ax.plot(lrs, means, "-o", color=color, label=label, markersize=4)
    if v.n_seeds > 1:
        ax.fill_between(lrs, lows, highs, color=color, alpha=0.18, linewidth=0)
    ok = [p for p in v.points if not p.diverged]
    bad = [p for p in v.points if p.diverged]
    if ok:
        ax.scatter([p.lr for p in ok], [p.accuracy for p in ok], s=9, color=color, alpha=0.35)
    if bad:
        ax.scatter(
            [p.lr for p in bad],
            [0.0] * len(bad),
            marker="x",
            s=40,
            color=color,
            label=f"{v.variant} diverged ({len(bad)})",
        )


def _draw_range_bracket(ax: Any, v: VariantSummary, key: str, index: int, count: int) -> None:
    """The variant's range at level `key`: a horizontal bracket at its threshold, from
    lr_low to lr_high; censored ends get an arrow head pointing off the studied lrs."""
    r = v.ranges.get(key)
    if r is None or r.at_chance:
        return
    color = color_for(v.variant)
    threshold = v.chance + float(key) * (v.best_accuracy - v.chance)
    # brackets of variants with equal thresholds would overlap: offset them a little
    y = threshold - 0.012 * index
    ax.hlines(y, r.lr_low, r.lr_high, colors=color, linewidth=2.2, alpha=0.9)
    for lr, censored, direction in (
        (r.lr_low, r.censored_low, "<"),
        (r.lr_high, r.censored_high, ">"),
    ):
        if censored:
            ax.plot([lr], [y], marker=direction, color=color, markersize=7)
        else:
            ax.vlines(lr, y - 0.02, y + 0.02, colors=color, linewidth=2.2)


def plot_range_widths(analysis: Analysis, path: Path) -> Path | None:
    """Range width (decades) per level and variant, with 95% bootstrap intervals; a
    censored width (a lower bound) is an open triangle pointing up."""
    settings = analysis.settings
    keys = analysis.level_keys
    if not any(v.ranges for v in analysis.variants):
        return None
    fig = Figure(figsize=(7.5, 3.6 * len(settings)), dpi=DPI)
    _margins(fig, rows=len(settings), hspace=0.9)
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    for ax, setting in zip(axes, settings, strict=True):
        shown = [v for v in analysis.variants if v.setting == setting]
        width = 0.8 / max(len(shown), 1)
        for i, v in enumerate(shown):
            color = color_for(v.variant)
            for j, key in enumerate(keys):
                r = v.ranges.get(key)
                if r is None:
                    continue
                x = j - 0.4 + width * (i + 0.5)
                iv = v.range_interval(key)
                if iv is not None and iv.low is not None and iv.high is not None:
                    ax.vlines(x, iv.low, iv.high, colors=color, linewidth=1.5)
                label = v.variant if j == 0 else None
                if r.at_chance:  # an unfilled marker: its colour is its face colour
                    ax.scatter([x], [r.decades], marker="x", s=36, color=color, label=label)
                    continue
                ax.scatter(
                    [x],
                    [r.decades],
                    marker="^" if r.censored else "o",
                    s=36,
                    facecolors="none" if r.censored else color,
                    edgecolors=color,
                    label=label,
                )
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{100 * float(k):g}% of gain" for k in keys])
        ax.set_xlim(-0.6, len(keys) - 0.4)
        ax.set_ylabel("lr range (decades)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(
            (f"{setting}: " if len(settings) > 1 else "")
            + "lr range width by level (bars: 95% CI; open triangle: censored, a lower bound; "
            "x: at chance)",
            fontsize=9,
        )
    fig.savefig(path)
    return path


def plot_eps_sensitivity(analysis: Analysis, path: Path) -> Path | None:
    """Accuracy vs eps for each INSGD variant, coloured by lr (None if no INSGD trials)."""
    variants = [v for v in analysis.variants if is_insgd(v.variant)]
    variants = [v for v in variants if any(p.eps is not None for p in v.points)]
    if not variants:
        return None
    all_lrs = [p.lr for v in variants for p in v.points]
    low, high = min(all_lrs), max(all_lrs)
    norm = LogNorm(vmin=low, vmax=high if high > low else low * 1.0001)
    fig = Figure(figsize=(4.2 * len(variants) + 1.2, 3.9), dpi=DPI)
    _margins(fig, cols=len(variants), wspace=0.8)
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    mappable = None
    for ax, v in zip(axes, variants, strict=True):
        pts = [p for p in v.points if p.eps is not None]
        mappable = ax.scatter(
            [p.eps for p in pts],
            [p.accuracy for p in pts],
            c=[p.lr for p in pts],
            norm=norm,
            cmap="viridis",
            s=12,
            alpha=0.5,
            edgecolors="none",
        )
        # one line per lr group: the mean over seeds at each eps
        lines: dict[float, dict[float, list[float]]] = {}
        for p in pts:
            lines.setdefault(analysis.grouping.key(p.lr)[0], {}).setdefault(p.eps, []).append(
                p.accuracy
            )
        for lr, by_eps in sorted(lines.items()):
            eps_values = sorted(by_eps)
            ax.plot(
                eps_values,
                [float(np.mean(by_eps[e])) for e in eps_values],
                "-o",
                markersize=3,
                linewidth=1.2,
                color=mappable.cmap(norm(lr)),
            )
        bad = [p for p in pts if p.diverged]
        if bad:
            ax.scatter(
                [p.eps for p in bad],
                [0.0] * len(bad),
                marker="x",
                color="red",
                s=40,
                label="diverged",
            )
            ax.legend(loc="best", fontsize=8)
        n_eps = len({p.eps for p in pts})
        _log_x(ax)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("eps" + (" (not varied)" if n_eps == 1 else ""))
        ax.set_ylabel("final validation accuracy")
        ax.set_title(analysis.label(v), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=list(axes), label="learning rate")
        _plain_log_labels(bar.ax.yaxis)
    fig.savefig(path)
    return path


def plot_learning_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path
) -> Path | None:
    """Validation accuracy and training loss per epoch of each variant's best trial."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = Figure(figsize=(10, 3.8), dpi=DPI)
    _margins(fig, cols=2, wspace=0.9)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for label, epochs in curves.items():
        color = color_for(label.split(" ")[0])
        xs = [e["epoch"] for e in epochs]
        acc_ax.plot(
            xs,
            [_num(e.get("val_accuracy")) for e in epochs],
            "-o",
            markersize=3,
            color=color,
            label=label,
        )
        losses = [_num(e.get("train_loss")) for e in epochs]
        loss_ax.plot(xs, losses, "-o", markersize=3, color=color, label=label)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.set_title("best trial per variant")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    finite = [y for line in loss_ax.get_lines() for y in line.get_ydata() if np.isfinite(y)]
    if finite and min(finite) > 0:
        _log_y(loss_ax)
    for ax in (acc_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.savefig(path)
    return path


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def render_figures(
    analysis: Analysis,
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: Path,
    title: str = "",
) -> dict[str, Path]:
    """Write every figure that has data into `out_dir`; returns {figure name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: out_dir / filename for name, filename in FIGURE_FILES.items()}
    written = {
        "accuracy_vs_lr": plot_accuracy_vs_lr(analysis, files["accuracy_vs_lr"], title),
        "range_widths": plot_range_widths(analysis, files["range_widths"]),
        "eps_sensitivity": plot_eps_sensitivity(analysis, files["eps_sensitivity"]),
        "learning_curves": plot_learning_curves(curves, files["learning_curves"]),
    }
    return {name: p for name, p in written.items() if p is not None}
