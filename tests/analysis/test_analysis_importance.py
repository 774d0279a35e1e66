"""Parameter importances: both views, and a reason instead of a crash when they cannot be had."""

from __future__ import annotations

import math

import optuna

from study.analysis.importance import is_insgd_trial, param_importances

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(n: int) -> optuna.Study:
    """norm in {none, l1, l2}, lr log-uniform, eps only for INSGD; accuracy follows lr."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))

    def objective(trial: optuna.Trial) -> float:
        norm = trial.suggest_categorical("norm", ["none", "l1", "l2"])
        lr = trial.suggest_float("lr", 1e-3, 10.0, log=True)
        if norm != "none":
            trial.suggest_float("eps", 1e-3, 1.0, log=True)
        return 0.9 - 0.2 * abs(math.log10(lr) + 1)

    study.optimize(objective, n_trials=n)
    return study


def test_lr_dominates_when_it_drives_accuracy_and_insgd_view_has_eps():
    result = param_importances(_study(30))
    imp = result["all"]["importances"]
    assert set(imp) == {"norm", "lr", "eps"} and max(imp, key=imp.get) == "lr"
    insgd = result["insgd"]
    assert insgd["n_trials"] < 30 and "eps" in insgd["importances"]


def test_too_few_trials_or_nothing_varied_is_said_not_raised():
    few = param_importances(_study(3))
    assert few["all"] == {"n_trials": 3, "error": "too few complete trials (3 < 4)"}
    flat = optuna.create_study(direction="maximize")
    for _ in range(5):
        flat.enqueue_trial({"norm": "none"})
    flat.optimize(lambda t: float(t.suggest_categorical("norm", ["none", "l2"]) == "l2"), 5)
    assert param_importances(flat)["all"]["error"] == (
        "no sampled parameter varied across these trials"
    )
    assert is_insgd_trial({"norm": "l1"}) and not is_insgd_trial({"norm": "none", "eps": 1.0})
    assert is_insgd_trial({"optimizer": "insgd"}) and is_insgd_trial({"eps": 0.01})
