"""Build a study's robustness report from the results database (and its Optuna study).

This is the one place that reads storage for the analysis: it loads the
trials, adapts them to `TrialPoint`s, runs `study.analysis.summary`, fetches the best
trial's learning curve per variant, the parameter importances from the Optuna
study of the same name, and, for a paper preset, the paper's numbers beside
ours. Everything it returns is plain data that `study.analysis.report` renders.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from study.analysis.metrics import TrialPoint, chance_accuracy, point_from_row
from study.analysis.options import DEFAULT_LEVELS
from study.analysis.paper import PaperReference, PaperRow, reference_for
from study.analysis.summary import (
    DEFAULT_BINS,
    DEFAULT_TOLERANCE,
    Analysis,
    VariantSummary,
    analyze_points,
    best_trial,
)
from study.errors import UsageError

PAPER_LR_DECADES = 0.15  # 0.25 vs 0.316: 0.1 decades
EPOCH_FIELDS = ("epoch", "val_accuracy", "train_loss", "train_accuracy", "val_loss", "lr")


@dataclass(frozen=True)
class PaperComparison:
    """One paper number beside ours (percent); ours is None where the study has no such run."""

    label: str
    lr: float | None
    variant: str
    paper_mean: float
    paper_std: float | None
    ours_mean: float | None = None
    ours_std: float | None = None
    ours_lr: float | None = None
    ours_seeds: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RobustnessReport:
    """A study's analysis plus what the rendered report shows around it."""

    study: str
    tolerance: float
    bins: int
    analysis: Analysis
    counts: dict[str, int]
    dataset: str | None = None
    importances: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    paper: PaperReference | None = None
    paper_rows: list[PaperComparison] = field(default_factory=list)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    best_trials: dict[str, int] = field(default_factory=dict)


def build_report(
    url: str,
    study_name: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    bins: int = DEFAULT_BINS,
    importances: bool = True,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
) -> RobustnessReport:
    """Load `study_name` from the database at `url` and analyze it.

    Raises `UsageError` for an unknown study or one without COMPLETE trials,
    and `StorageError` (from storage) for an unreachable or outdated database.
    """
    from storage import open_database, queries

    # storage caches one engine per URL and process (launch may be using it): not disposed here
    engine = open_database(url, upgrade=False)
    config = _study_config(engine, study_name)
    rows = queries.list_trials(engine, study=study_name)
    points = [point_from_row(r) for r in rows if getattr(r, "lr", None) is not None]
    counts = dict(Counter(str(r.state) for r in rows))
    if not any(p.state == "COMPLETE" for p in points):
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
        raise UsageError(f"study {study_name!r} has no COMPLETE trials yet ({summary})")
    dataset = config.get("dataset")
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    chance = chance_accuracy(dataset, train.get("dataset_options"))
    analysis = analyze_points(
        points,
        tolerance=tolerance,
        bins=bins,
        grid=_is_grid(config),
        levels=levels,
        chance=chance,
    )
    curves, best = _best_curves(engine, study_name, analysis)
    preset = infer_preset(study_name, config)
    report = RobustnessReport(
        study=study_name,
        tolerance=tolerance,
        bins=bins,
        analysis=analysis,
        counts=counts,
        dataset=dataset if isinstance(dataset, str) else None,
        preset=preset,
        curves=curves,
        best_trials=best,
    )
    report.paper = reference_for(preset)
    if report.paper is not None:
        report.paper_rows = compare_with_paper(analysis, report.paper)
    if importances:
        report.importances = load_importances(url, study_name)
    return report


def _study_config(engine: Any, study_name: str) -> dict[str, Any]:
    """The stored study configuration; an unknown study is a UsageError naming the known ones."""
    from storage import queries

    study = queries.get_study(engine, study_name)
    if study is None:
        names = sorted(s.name for s in queries.list_studies(engine))
        known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "none"
        raise UsageError(f"unknown study {study_name!r} (studies in this database: {known})")
    return study.config if isinstance(study.config, dict) else {}


def infer_preset(study_name: str, config: dict[str, Any]) -> str | None:
    """Which paper preset a stored study ran, if any.

    The stored configuration has no preset name (a preset is only a layer of
    defaults), so a study is a paper preset's when it trained what that preset
    trains: same dataset, model and BatchNorm setting. Where several presets
    train the same thing, the one named like the study wins.
    """
    from study.presets import PRESETS

    if isinstance(config.get("preset"), str):
        return config["preset"]
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    matches = [
        name
        for name, preset in PRESETS.items()
        if name.startswith("paper-")
        and preset.get("dataset") == config.get("dataset")
        and preset.get("model") == config.get("model")
        and preset.get("train", {}).get("batchnorm", True) == train.get("batchnorm", True)
    ]
    if study_name in matches:
        return study_name
    return matches[0] if matches else None


def _is_grid(config: dict[str, Any]) -> bool | None:
    """True when the study says it sampled a grid; None lets the data decide."""
    sampler = config.get("sampler")
    if isinstance(sampler, dict):
        sampler = sampler.get("name") or sampler.get("type")
    return True if isinstance(sampler, str) and sampler.lower() == "grid" else None


def _best_curves(
    engine: Any, study_name: str, analysis: Analysis
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The per-epoch metrics of each variant's best trial, keyed by the variant's label."""
    from storage import queries

    curves: dict[str, list[dict[str, Any]]] = {}
    best: dict[str, int] = {}
    for v in analysis.variants:
        top = best_trial(v.points)
        if top is None or top.trial_number is None:
            continue
        label = analysis.label(v)
        best[label] = top.trial_number
        epochs = queries.trial_epochs(engine, study_name, top.trial_number)
        curves[f"{label} (trial {top.trial_number}, lr {top.lr:.3g})"] = [
            {k: _field(e, k) for k in EPOCH_FIELDS} for e in epochs
        ]
    return curves, best


def _field(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def load_importances(url: str, study_name: str) -> dict[str, Any]:
    """Parameter importances from the Optuna study of the same name, or why there are none."""
    from study.analysis.importance import param_importances
    from study.analysis.optuna_study import open_optuna_study, optuna_study_exists

    if not optuna_study_exists(url, study_name):
        return {"error": f"no Optuna study named {study_name!r} in this database"}
    with open_optuna_study(url, study_name) as study:
        return param_importances(study)


def compare_with_paper(analysis: Analysis, paper: PaperReference) -> list[PaperComparison]:
    """Each paper number beside ours at the same lr (or at each side's best lr)."""
    out = []
    for row in paper.rows:
        for variant, (mean, std) in row.values.items():
            base = PaperComparison(row.label, row.lr, variant, mean, std)
            summary = _matching_summary(analysis, variant, row)
            if summary is not None:
                base = _ours(base, summary, row)
            out.append(base)
    return out


def _matching_summary(analysis: Analysis, variant: str, row: PaperRow) -> VariantSummary | None:
    """Our variant in the setting whose BatchNorm matches the paper row's."""
    candidates = [
        v
        for v in analysis.variants
        if v.variant == variant and v.setting.endswith(" no-BN") == (not row.batchnorm)
    ]
    return candidates[0] if candidates else None


def _ours(base: PaperComparison, v: VariantSummary, row: PaperRow) -> PaperComparison:
    """Our group at the paper's lr: the same lr, the bin holding it, or the nearest lr
    within `PAPER_LR_DECADES` (a log grid need not hit 0.25; the table shows our lr)."""
    if row.lr is None:
        group = next(g for g in v.groups if g.lr == v.best_lr)
    else:
        target = math.log10(row.lr)
        near = [
            g
            for g in v.groups
            if g.lr_low <= row.lr <= g.lr_high or abs(math.log10(g.lr) - target) <= PAPER_LR_DECADES
        ]
        if not near:
            return base
        group = min(near, key=lambda g: abs(math.log10(g.lr) - target))
    return PaperComparison(
        base.label,
        base.lr,
        base.variant,
        base.paper_mean,
        base.paper_std,
        ours_mean=100.0 * group.mean,
        ours_std=100.0 * group.std if len(group.seeds) > 1 else None,
        ours_lr=group.lr,
        ours_seeds=len(group.seeds),
    )


def points_of(report: RobustnessReport) -> list[TrialPoint]:
    """Every COMPLETE trial point of the report, all variants together."""
    return [p for v in report.analysis.variants for p in v.points]
