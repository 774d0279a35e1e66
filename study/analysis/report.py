"""Render a `RobustnessReport`: a terminal table, the JSON contract, Markdown, an HTML page.

The JSON is the documented contract (accuracies and rates as fractions, lrs as
numbers, null where a value does not exist); the table and the HTML page are
for people (percent with 1-2 decimals, one verdict sentence per metric,
intervals wherever there were 2+ seeds).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from study.analysis.robustness import RobustnessReport
from study.analysis.summary import Analysis, Comparison, VariantSummary

JSON_SCHEMA_VERSION = 1


# ---------------------------------------------------------------- formatting helpers


def pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100.0 * value:.{digits}f}%"


def lr_str(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def _interval(summary: VariantSummary, metric: str, scale: float, digits: int) -> str:
    if not summary.intervals or metric not in summary.intervals:
        return ""
    iv = summary.intervals[metric]
    return f" [{scale * iv.low:.{digits}f}, {scale * iv.high:.{digits}f}]"


def _points(tolerance: float) -> str:
    """A tolerance (fraction) in accuracy points: 0.01 -> "1 accuracy point"."""
    value = 100.0 * tolerance
    return f"{value:g} accuracy point{'' if value == 1 else 's'}"


def _grouping_text(analysis: Analysis) -> str:
    if analysis.grouping.mode == "exact":
        return "trials grouped by exact lr"
    return f"trials grouped into {len(analysis.grouping.edges) - 1} log-spaced lr bins"


# ---------------------------------------------------------------- verdicts


_VERDICT_METRICS: tuple[tuple[str, str, bool], ...] = (
    # (metric, title, higher is better)
    ("best_accuracy", "Best accuracy", True),
    ("lr_window_decades", "LR window", True),
    ("max_stable_lr", "Max stable lr", True),
    ("divergence_rate", "Divergence rate", False),
    ("auc", "Accuracy averaged over the lr range (AUC)", True),
)


def _metric_text(metric: str, v: VariantSummary) -> str:
    value = getattr(v, metric)
    if metric == "best_accuracy":
        return f"{pct(value)} at lr {lr_str(v.best_lr)}"
    if metric == "lr_window_decades":
        return f"{value:.2f} decades"
    if metric == "max_stable_lr":
        if value is None:
            return "none (diverged at every lr)"
        # Not diverging is not learning: a run stuck at chance accuracy is "stable" too,
        # so the accuracy there goes with the lr.
        there = next((g.mean for g in v.groups if g.lr == value), None)
        return f"lr {lr_str(value)}" + ("" if there is None else f" at {pct(there)} accuracy")
    return pct(value, 1)


def _diff_text(metric: str, c: Comparison) -> str:
    iv = c.differences[metric]
    if metric == "best_accuracy":
        body = (
            f"{_signed(100 * iv.estimate)} points [{_signed(100 * iv.low)}, "
            f"{_signed(100 * iv.high)}]"
        )
    else:
        body = f"{_signed(iv.estimate)} decades [{_signed(iv.low)}, {_signed(iv.high)}]"
    if not iv.excludes_zero():
        word = "no clear difference"
    else:
        word = "INSGD better" if iv.estimate > 0 else "SGD better"
    return f"{c.variant} - {c.baseline} = {body}, {word}"


def verdicts(report: RobustnessReport) -> list[str]:
    """One sentence per metric (per setting when the study has several settings)."""
    analysis = report.analysis
    tol = _points(analysis.tolerance)
    out = []
    for setting in analysis.settings:
        prefix = f"[{setting}] " if len(analysis.settings) > 1 else ""
        variants = [v for v in analysis.variants if v.setting == setting]
        comps = [c for c in analysis.comparisons if c.setting == setting]
        for metric, title, higher in _VERDICT_METRICS:
            out.append(prefix + _verdict(metric, title, higher, variants, comps, tol))
    return out


def _verdict(
    metric: str,
    title: str,
    higher: bool,
    variants: Sequence[VariantSummary],
    comps: Sequence[Comparison],
    tol: str,
) -> str:
    def key(v: VariantSummary) -> float:
        value = getattr(v, metric)
        value = -math.inf if value is None else value
        return value if higher else -value

    if metric == "lr_window_decades":
        title = f"{title} (lrs within {tol} of the variant's best)"
    if len(variants) == 1:
        v = variants[0]
        return f"{title}: {v.variant} {_metric_text(metric, v)} (no other variant to compare)."
    ranked = sorted(variants, key=key, reverse=True)
    top = [v for v in ranked if key(v) == key(ranked[0])]
    others = ", ".join(f"{v.variant} {_metric_text(metric, v)}" for v in ranked if v not in top)
    texts = {_metric_text(metric, v) for v in top}
    if len(texts) == 1:  # one value (and lr) shared by the leaders
        shared = f"{texts.pop()}"
        leaders = " and ".join(v.variant for v in top)
    else:  # tied value at different lrs: say each one's
        shared = ""
        leaders = " and ".join(f"{v.variant} ({_metric_text(metric, v)})" for v in top)
    if len(top) == len(variants):
        sentence = f"{title}: all variants tie" + (f" at {shared}" if shared else f": {leaders}")
    else:
        verb = "lead" if len(top) > 1 else "leads"
        sentence = f"{title}: {leaders} {verb}" + (f" with {shared}" if shared else "")
        sentence += f" ({others})"
    diffs = [_diff_text(metric, c) for c in comps if metric in c.differences]
    if diffs:
        sentence += "; " + "; ".join(diffs)
    elif metric in ("best_accuracy", "lr_window_decades") and not any(
        v.intervals for v in variants
    ):
        sentence += "; one seed only, so no intervals"
    return sentence + "."


# ---------------------------------------------------------------- JSON


def report_json(
    report: RobustnessReport, figures: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """The documented JSON contract of `insgd-study report --format json`."""
    a = report.analysis
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "study": report.study,
        "tolerance": report.tolerance,
        "bins": report.bins,
        "grouping": {"mode": a.grouping.mode, "edges": list(a.grouping.edges) or None},
        "bootstrap_resamples": a.n_resamples,
        "trial_counts": dict(sorted(report.counts.items())),
        "preset": report.preset,
        "variants": [v.to_json_dict() for v in a.variants],
        "comparisons": [c.to_json_dict() for c in a.comparisons],
        "importances": report.importances,
        "best_trials": report.best_trials,
        "verdicts": verdicts(report),
        "paper": (
            {
                "preset": report.paper.preset,
                "title": report.paper.title,
                "note": report.paper.note,
                "rows": [r.to_json_dict() for r in report.paper_rows],
            }
            if report.paper
            else None
        ),
        "figures": {k: p.name for k, p in (figures or {}).items()},
    }


# ---------------------------------------------------------------- tables (shared by text/HTML)

Table = tuple[list[str], list[list[str]]]


def variant_table(report: RobustnessReport) -> Table:
    a = report.analysis
    head = [
        "variant",
        "trials",
        "seeds",
        "best acc",
        "best lr",
        "lr window (dec)",
        "max stable lr",
        "diverged",
        "AUC",
    ]
    rows = [
        [
            a.label(v),
            str(v.n_trials),
            str(v.n_seeds),
            pct(v.best_accuracy) + _interval(v, "best_accuracy", 100.0, 2),
            lr_str(v.best_lr),
            f"{v.lr_window_decades:.2f}" + _interval(v, "lr_window_decades", 1.0, 2),
            lr_str(v.max_stable_lr),
            pct(v.divergence_rate, 1),
            pct(v.auc, 1),
        ]
        for v in a.variants
    ]
    return head, rows


def comparison_table(report: RobustnessReport) -> Table | None:
    a = report.analysis
    if not a.comparisons:
        return None
    head = ["INSGD - SGD", "best acc (points) [95% CI]", "lr window (decades) [95% CI]"]
    rows = []
    for c in a.comparisons:
        b, w = c.differences["best_accuracy"], c.differences["lr_window_decades"]
        label = c.variant if len(a.settings) == 1 else f"{c.variant} [{c.setting}]"
        rows.append(
            [
                label,
                f"{_signed(100 * b.estimate)} [{_signed(100 * b.low)}, {_signed(100 * b.high)}]",
                f"{_signed(w.estimate)} [{_signed(w.low)}, {_signed(w.high)}]",
            ]
        )
    return head, rows


def lr_table(report: RobustnessReport, setting: str) -> Table:
    """Mean accuracy (+- std over seeds) per lr group and variant, diverged counts marked."""
    variants = [v for v in report.analysis.variants if v.setting == setting]
    lrs = sorted({g.lr for v in variants for g in v.groups})
    head = ["lr"] + [v.variant for v in variants]
    rows = []
    for lr in lrs:
        row = [lr_str(lr)]
        for v in variants:
            g = next((g for g in v.groups if g.lr == lr), None)
            if g is None:
                row.append("")
                continue
            cell = f"{100 * g.mean:.2f}"
            if len(g.seeds) > 1:
                cell += f" +-{100 * g.std:.2f}"
            if g.n_diverged:
                cell += f" ({g.n_diverged}/{g.n_trials} div)"
            row.append(cell)
        rows.append(row)
    return head, rows


def importance_lines(report: RobustnessReport) -> list[str]:
    if not report.importances:
        return []
    if "error" in report.importances:
        return [f"not available: {report.importances['error']}"]
    names = {"all": "all trials", "insgd": "INSGD trials only"}
    lines = []
    for key, title in names.items():
        view = report.importances.get(key) or {}
        n = view.get("n_trials", 0)
        if "importances" in view:
            body = ", ".join(
                f"{k} {'n/a' if v is None else format(v, '.2f')}"
                for k, v in view["importances"].items()
            )
            lines.append(f"{title} ({n}): {body}")
        else:
            lines.append(f"{title} ({n}): not available: {view.get('error', 'unknown')}")
    return lines


def paper_table(report: RobustnessReport) -> Table | None:
    if report.paper is None:
        return None
    head = ["setting", "lr", "variant", "paper (%)", "ours (%)", "our lr", "our seeds"]
    rows = []
    for r in report.paper_rows:
        paper = f"{r.paper_mean:.2f}" + (f" +-{r.paper_std:.2f}" if r.paper_std is not None else "")
        if r.ours_mean is None:
            ours, our_lr = "not run", ""
        else:
            ours = f"{r.ours_mean:.2f}" + (f" +-{r.ours_std:.2f}" if r.ours_std is not None else "")
            our_lr = lr_str(r.ours_lr)
        rows.append(
            [
                r.label,
                "best" if r.lr is None else lr_str(r.lr),
                r.variant,
                paper,
                ours,
                our_lr,
                str(r.ours_seeds) if r.ours_mean is not None else "",
            ]
        )
    return head, rows


# ---------------------------------------------------------------- text


def format_table(table: Table, indent: str = "") -> str:
    """Aligned columns for a terminal; control characters in cells are escaped."""
    from study.terminal import printable

    head, rows = table
    head = [printable(str(c)) for c in head]
    rows = [[printable(str(c)) for c in r] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return indent + "  ".join([first, *rest]).rstrip()

    sep = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def _header(report: RobustnessReport) -> str:
    a = report.analysis
    n_complete = report.counts.get("COMPLETE", 0)
    dropped = ", ".join(f"{n} {s}" for s, n in sorted(report.counts.items()) if s != "COMPLETE")
    text = (
        f"Study {report.study!r}: robustness to the learning rate "
        f"({n_complete} COMPLETE trials{'; excluded: ' + dropped if dropped else ''}; "
        f"{_grouping_text(a)}; lr window tolerance {_points(a.tolerance)})"
    )
    if report.preset:
        text += f"\npreset: {report.preset}"
    return text


def render_text(report: RobustnessReport) -> str:
    """The `--format table` output: comparison, verdicts, per-lr table, importances, paper."""
    a = report.analysis
    parts = [_header(report), "", format_table(variant_table(report))]
    if any(v.intervals for v in a.variants):
        parts.append(
            f"[..] = 95% bootstrap interval ({a.n_resamples} resamples of seeds within each lr)"
        )
    comp = comparison_table(report)
    if comp:
        parts += ["", format_table(comp)]
    from study.terminal import printable

    parts += ["", "Verdict:"] + [f"- {printable(s)}" for s in verdicts(report)]
    for setting in a.settings:
        title = "Accuracy (%) by learning rate, mean +-std over seeds"
        if len(a.settings) > 1:
            title += f" [{setting}]"
        parts += ["", title + ":", format_table(lr_table(report, setting))]
    imp = importance_lines(report)
    if imp:
        parts += ["", "Parameter importances (Optuna PED-ANOVA):"]
        parts += [f"- {printable(x)}" for x in imp]
    paper = paper_table(report)
    if paper and report.paper:
        parts += ["", f"The paper beside ours: {report.paper.title}", format_table(paper)]
        if report.paper.note:
            parts.append(report.paper.note)
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- Markdown (dashboard note)


def _md_table(table: Table) -> str:
    head, rows = table

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: RobustnessReport, artifacts: Sequence[str] = ()) -> str:
    """The note attached to the Optuna study, shown by optuna-dashboard on the study page."""
    parts = [
        f"## Robustness to the learning rate: {report.study}",
        "",
        _header(report).replace("\n", "  \n"),
        "",
        _md_table(variant_table(report)),
    ]
    comp = comparison_table(report)
    if comp:
        parts += ["", _md_table(comp)]
    parts += ["", "**Verdict**", ""] + [f"- {s}" for s in verdicts(report)]
    imp = importance_lines(report)
    if imp:
        parts += ["", "**Parameter importances** (PED-ANOVA)", ""] + [f"- {x}" for x in imp]
    paper = paper_table(report)
    if paper:
        parts += ["", "**The paper beside ours**", "", _md_table(paper)]
    if artifacts:
        parts += [
            "",
            "Figures and the full report are attached as artifacts: "
            + ", ".join(f"`{a}`" for a in artifacts)
            + ".",
        ]
    parts += ["", "_Written by `insgd-study report`._"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:0.6rem 0 1.2rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.6rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:0.5rem 0}
.note{color:#555;font-size:0.9rem}code{background:#f6f6f6;padding:0 0.2rem}
"""


def _html_table(table: Table) -> str:
    head, rows = table
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_FIGURE_TITLES = {
    "accuracy_vs_lr": "Accuracy vs learning rate (band: range over seeds; x: diverged)",
    "eps_sensitivity": "eps sensitivity of INSGD (colour: learning rate)",
    "learning_curves": "Learning curves of each variant's best trial",
}


def render_html(report: RobustnessReport, figures: Mapping[str, Path]) -> str:
    """One self-contained page: tables, verdicts and the figures embedded as base64 PNG."""
    esc = html.escape
    a = report.analysis
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>insgd-study report: {esc(report.study)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Robustness to the learning rate: {esc(report.study)}</h1>",
        f'<p class="note">{esc(_header(report))}</p>',
        "<h2>Variants</h2>",
        _html_table(variant_table(report)),
    ]
    if any(v.intervals for v in a.variants):
        parts.append(
            f'<p class="note">[..] = 95% bootstrap interval ({a.n_resamples} resamples of '
            "seeds within each lr group).</p>"
        )
    comp = comparison_table(report)
    if comp:
        parts += ["<h2>INSGD minus SGD</h2>", _html_table(comp)]
    parts += ["<h2>Verdict</h2><ul>"]
    parts += [f"<li>{esc(s)}</li>" for s in verdicts(report)]
    parts.append("</ul>")
    for setting in a.settings:
        suffix = f" [{setting}]" if len(a.settings) > 1 else ""
        parts += [
            f"<h2>Accuracy (%) by learning rate{esc(suffix)}</h2>",
            _html_table(lr_table(report, setting)),
        ]
    imp = importance_lines(report)
    if imp:
        parts += ["<h2>Parameter importances (Optuna PED-ANOVA)</h2><ul>"]
        parts += [f"<li>{esc(x)}</li>" for x in imp] + ["</ul>"]
    paper = paper_table(report)
    if paper and report.paper:
        parts += [
            f"<h2>The paper beside ours</h2><p>{esc(report.paper.title)}</p>",
            _html_table(paper),
            f'<p class="note">{esc(report.paper.note)}</p>',
        ]
    for name, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        title = _FIGURE_TITLES.get(name, name)
        parts += [
            f"<h2>{esc(title)}</h2>",
            f'<img alt="{esc(name)}" src="data:image/png;base64,{data}">',
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
