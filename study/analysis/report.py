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

from study.analysis.metrics import FROZEN_SUFFIX, is_frozen, is_insgd
from study.analysis.ranges import WidthDifference
from study.analysis.robustness import RobustnessReport
from study.analysis.summary import BASELINE, Analysis, Comparison, Interval, VariantSummary

JSON_SCHEMA_VERSION = 2


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


def _grouping_text(analysis: Analysis) -> str:
    if analysis.grouping.mode == "exact":
        return "trials grouped by exact lr"
    return f"trials grouped into {len(analysis.grouping.edges) - 1} log-spaced lr bins"


# ---------------------------------------------------------------- verdicts

GE = "\u2265"  # "≥": a censored range is a lower bound on the width


def range_text(v: VariantSummary, key: str, *, interval: bool = True) -> str:
    """ "1.55 decades [1.3, 1.8] (lr 0.011-0.40)", "≥ 0.78 decades (lr 0.01-0.061, censored
    below)", or "does not learn" for a variant whose best is no gain over chance."""
    r = v.ranges.get(key)
    if r is None:
        return "-"
    if r.at_chance:
        return f"does not learn (best {pct(v.best_accuracy)} vs chance {pct(v.chance)})"
    text = f"{GE} " if r.censored else ""
    text += f"{r.decades:.2f} decades"
    iv = v.range_interval(key) if interval else None
    if iv is not None and iv.low is not None and iv.high is not None:
        text += f" [{iv.low:.2f}, {iv.high:.2f}]"
    text += f" (lr {lr_str(r.lr_low)}-{lr_str(r.lr_high)}"
    sides = [s for s, c in (("below", r.censored_low), ("above", r.censored_high)) if c]
    if sides:
        text += ", censored " + " and ".join(sides)
    return text + ")"


def _range_cell(v: VariantSummary, key: str) -> str:
    r = v.ranges.get(key)
    if r is None:
        return "-"
    if r.at_chance:
        return "at chance"
    cell = (f"{GE}" if r.censored else "") + f"{r.decades:.2f}"
    iv = v.range_interval(key)
    if iv is not None and iv.low is not None and iv.high is not None:
        cell += f" [{iv.low:.2f}, {iv.high:.2f}]"
    return cell


def width_diff_text(d: WidthDifference) -> str:
    """A range-width difference as the data allow: a bound where a side is censored, an
    interval where there were seeds to resample, and the word that goes with it."""
    body = f"{_signed(d.difference)} decades"
    if d.interval is not None:
        body += f" [{_signed(d.interval[0])}, {_signed(d.interval[1])}]"
    if not d.comparable:
        return body + ", not comparable (censored or at chance on both sides)"
    if d.bound == "at_least":
        body = "at least " + body
    elif d.bound == "at_most":
        body = "at most " + body
    if d.interval is None:
        return body + ", one seed only, so no interval"
    if d.clear:
        return body + (", clearly wider" if d.difference > 0 else ", clearly narrower")
    return body + ", no clear difference"


def _interval_diff_text(iv: Interval, scale: float, unit: str) -> str:
    body = f"{_signed(scale * iv.estimate)} {unit}"
    if iv.low is None or iv.high is None:
        return body + " (one seed, no interval)"
    body += f" [{_signed(scale * iv.low)}, {_signed(scale * iv.high)}]"
    return body + ("" if iv.excludes_zero() else ", no clear difference")


def _shift_text(shift: float | None) -> str:
    if shift is None:
        return ""
    if abs(shift) < 1e-9:
        return "best lr the same"
    return f"best lr {abs(shift):.2f} decades {'higher' if shift > 0 else 'lower'}"


def range_verdicts(report: RobustnessReport) -> list[str]:
    """One sentence per INSGD variant, leading with the answer: its range at the headline
    level vs SGD's, the difference as the data allow, the best-lr shift, and what its
    frozen control says about adaptivity. A frozen control whose INSGD variant was not
    run gets a sentence of its own."""
    a = report.analysis
    key = a.headline_level
    q = f"{100 * float(key):g}%"
    out = []
    for setting in a.settings:
        prefix = f"[{setting}] " if len(a.settings) > 1 else ""
        variants = {v.variant: v for v in a.variants if v.setting == setting}
        comps = {(c.variant, c.baseline): c for c in a.comparisons if c.setting == setting}
        for name, v in variants.items():
            if not is_insgd(name):
                continue
            if is_frozen(name) and name.removesuffix(FROZEN_SUFFIX) in variants:
                continue  # spoken of in its variant's sentence
            r = v.ranges.get(key)
            if r is not None and r.at_chance:
                parts = [f"{name} {range_text(v, key)}"]
            else:
                parts = [f"{name} keeps {q} of its gain over chance over {range_text(v, key)}"]
            base = variants.get(BASELINE)
            c = comps.get((name, BASELINE))
            if base is not None and c is not None:
                parts[0] += f" vs {BASELINE} {range_text(base, key)}"
                if key in c.ranges:
                    parts.append(width_diff_text(c.ranges[key]))
                shift = _shift_text(c.best_lr_shift_decades)
                if shift:
                    parts.append(shift)
            control = variants.get(name + FROZEN_SUFFIX)
            cc = comps.get((name, name + FROZEN_SUFFIX))
            if control is not None and cc is not None and key in cc.ranges:
                parts.append(
                    f"its frozen control covers {range_text(control, key)}: adaptivity adds "
                    + width_diff_text(cc.ranges[key])
                )
            out.append(prefix + "; ".join(parts) + ".")
    return out


_VERDICT_METRICS: tuple[tuple[str, str, bool], ...] = (
    # (metric, title, higher is better)
    ("best_accuracy", "Best accuracy", True),
    ("max_trainable_lr", "Max trainable lr (no divergence, half the gain over chance kept)", True),
    ("divergence_rate", "Divergence rate", False),
    ("auc", "Accuracy averaged over the lr range (AUC)", True),
)


def _metric_text(metric: str, v: VariantSummary) -> str:
    value = getattr(v, metric)
    if metric == "best_accuracy":
        return f"{pct(value)} at lr {lr_str(v.best_lr)}"
    if metric == "lr_window_decades":
        return f"{value:.2f} decades"
    if metric == "max_trainable_lr":
        if value is None:
            return "none (no lr trains without divergence)"
        there = next((g.mean for g in v.groups if g.lr == value), None)
        return f"lr {lr_str(value)}" + ("" if there is None else f" at {pct(there)} accuracy")
    return pct(value, 1)


def _diff_text(metric: str, c: Comparison) -> str:
    iv = c.differences[metric]
    if metric == "best_accuracy":
        body = _interval_diff_text(iv, 100.0, "points")
    elif metric == "auc":
        body = _interval_diff_text(iv, 100.0, "points")
    else:
        body = _interval_diff_text(iv, 1.0, "decades")
    return f"{c.variant} - {c.baseline} = {body}"


def verdicts(report: RobustnessReport) -> list[str]:
    """The range verdicts first (the question the report answers), then one sentence per
    other metric (per setting when the study has several settings)."""
    analysis = report.analysis
    out = range_verdicts(report)
    for setting in analysis.settings:
        prefix = f"[{setting}] " if len(analysis.settings) > 1 else ""
        variants = [v for v in analysis.variants if v.setting == setting]
        comps = [c for c in analysis.comparisons if c.setting == setting and c.baseline == BASELINE]
        for metric, title, higher in _VERDICT_METRICS:
            out.append(prefix + _verdict(metric, title, higher, variants, comps))
    return out


def _verdict(
    metric: str,
    title: str,
    higher: bool,
    variants: Sequence[VariantSummary],
    comps: Sequence[Comparison],
) -> str:
    def key(v: VariantSummary) -> float:
        value = getattr(v, metric)
        value = -math.inf if value is None else value
        return value if higher else -value

    if len(variants) == 1:
        v = variants[0]
        return f"{title}: {v.variant} {_metric_text(metric, v)} (no other variant to compare)."
    ranked = sorted(variants, key=key, reverse=True)
    top = [v for v in ranked if key(v) == key(ranked[0])]
    others = ", ".join(f"{v.variant} {_metric_text(metric, v)}" for v in ranked if v not in top)
    texts = {_metric_text(metric, v) for v in top}
    if metric == "max_trainable_lr" and getattr(ranked[0], metric) is None:
        return f"{title}: none of the variants trains at any lr studied."
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
        "levels": list(a.levels),
        "chance": a.chance,
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
    keys = a.level_keys
    head = [
        "variant",
        "trials",
        "seeds",
        "best acc",
        "best lr",
        *(f"range {100 * float(k):g}% (dec)" for k in keys),
        "max trainable lr",
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
            *(_range_cell(v, k) for k in keys),
            lr_str(v.max_trainable_lr),
            pct(v.divergence_rate, 1),
            pct(v.auc, 1) + _interval(v, "auc", 100.0, 1),
        ]
        for v in a.variants
    ]
    return head, rows


def comparison_table(report: RobustnessReport) -> Table | None:
    a = report.analysis
    if not a.comparisons:
        return None
    key = a.headline_level
    head = [
        "difference",
        f"range {100 * float(key):g}% (decades) [95% CI]",
        "best lr shift (dec)",
        "best acc (points) [95% CI]",
        "AUC (points) [95% CI]",
    ]
    rows = []
    for c in a.comparisons:
        label = f"{c.variant} - {c.baseline}"
        if len(a.settings) > 1:
            label += f" [{c.setting}]"
        d = c.ranges.get(key)
        rows.append(
            [
                label,
                "-" if d is None else _width_cell(d),
                "-" if c.best_lr_shift_decades is None else _signed(c.best_lr_shift_decades),
                _interval_cell(c.differences["best_accuracy"], 100.0),
                _interval_cell(c.differences["auc"], 100.0),
            ]
        )
    return head, rows


def _interval_cell(iv: Interval, scale: float) -> str:
    cell = _signed(scale * iv.estimate)
    if iv.low is not None and iv.high is not None:
        cell += f" [{_signed(scale * iv.low)}, {_signed(scale * iv.high)}]"
    return cell


def _width_cell(d: WidthDifference) -> str:
    """E.g. "at least +0.77 [+0.5, +1.0]", "+0.35 [+0.1, +0.6] clear", "n/c +0.10"."""
    cell = _signed(d.difference)
    if d.interval is not None:
        cell += f" [{_signed(d.interval[0])}, {_signed(d.interval[1])}]"
    if not d.comparable:
        return "not comparable " + cell
    if d.bound == "at_least":
        cell = f"{GE} " + cell
    elif d.bound == "at_most":
        cell = "\u2264 " + cell
    return cell + (" clear" if d.clear else "")


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
        f"{_grouping_text(a)}; chance {pct(a.chance, 1)}; a range keeps "
        f"{', '.join(f'{100 * q:g}%' for q in a.levels)} of the gain over chance)"
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
    "accuracy_vs_lr": (
        "Accuracy vs learning rate (band: range over seeds; x: diverged; brackets: each "
        "variant's lr range)"
    ),
    "range_widths": "lr range width per level, with 95% bootstrap intervals",
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
        parts += ["<h2>Differences</h2>", _html_table(comp)]
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
