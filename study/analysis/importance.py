"""Which hyperparameters matter: Optuna's importance evaluators on the study's Optuna trials.

Two views, because eps only exists for INSGD trials (a conditional parameter):
- "all": every COMPLETE trial with Optuna's default evaluator (PED-ANOVA in
  Optuna 5, which handles conditional parameters), so lr, variant and eps compete;
- "insgd": only the INSGD trials, re-evaluated in an in-memory copy of the study
  so that eps is present in every trial and lr vs eps is a fair comparison.
A view that cannot be computed (too few trials, a parameter that never varied)
says why instead of failing the report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

MIN_TRIALS = 4
INSGD_NORMS = ("l1", "l2")


def is_insgd_trial(params: dict[str, Any]) -> bool:
    """An Optuna trial is INSGD when its sampled variant/norm/optimizer says so (the frozen
    controls are INSGD), or it sampled eps; "norm" is the parameter of studies launched
    before variants existed."""
    if "optimizer" in params:
        return params["optimizer"] == "insgd"
    if "variant" in params:
        return params["variant"] != "sgd"
    if "norm" in params:
        return params["norm"] in INSGD_NORMS
    return "eps" in params


def param_importances(study: Any) -> dict[str, Any]:
    """{"all": view, "insgd": view} for an `optuna.Study` (see the module docstring)."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    insgd = [t for t in complete if is_insgd_trial(t.params)]
    return {
        "all": _evaluate(study, complete),
        "insgd": _evaluate(study, insgd),
    }


def _evaluate(study: Any, trials: Sequence[Any]) -> dict[str, Any]:
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    view: dict[str, Any] = {"n_trials": len(trials)}
    if len(trials) < MIN_TRIALS:
        view["error"] = f"too few complete trials ({len(trials)} < {MIN_TRIALS})"
        return view
    varying = sorted(
        name
        for name in {p for t in trials for p in t.params}
        if len({repr(t.params[name]) for t in trials if name in t.params}) > 1
    )
    if not varying:
        view["error"] = "no sampled parameter varied across these trials"
        return view
    copy = optuna.create_study(directions=study.directions)
    copy.add_trials(list(trials))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(
                copy, params=varying, evaluator=PedAnovaImportanceEvaluator()
            )
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            view["error"] = " ".join(str(exc).split()) or type(exc).__name__
            return view
    view["evaluator"] = "PedAnovaImportanceEvaluator"
    # JSON has no NaN: an importance the evaluator could not compute is null
    view["importances"] = {
        k: float(v) if math.isfinite(float(v)) else None for k, v in importances.items()
    }
    notes = sorted(
        {" ".join(str(w.message).split()) for w in caught if "importance" in str(w.message).lower()}
    )
    if notes:
        view["note"] = "; ".join(notes)
    return view
