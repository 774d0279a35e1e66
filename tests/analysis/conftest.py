"""A stored study whose robustness numbers are known by construction.

Trials are written with `storage.ResultWriter` (as `launch` does) and mirrored
into an Optuna study of the same name (as OptunaSearch does), without Ray.
Per variant and lr, the two seeds sit at mean -+ 0.002, so every group mean is
exactly the table below; PRUNED / FAIL / RUNNING trials carry tempting
accuracies that must never reach the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

LRS = (0.01, 0.1, 1.0, 10.0)
#: variant (norm) -> mean final accuracy per lr; None = diverged (counts as 0.0)
TRUTH: dict[str, tuple[float | None, ...]] = {
    "none": (0.80, 0.90, 0.60, None),
    "l1": (0.79, 0.90, 0.895, 0.70),
    "l2": (0.80, 0.91, 0.905, 0.75),
}
SEED_OFFSETS = {0: -0.002, 1: +0.002}
EPS = 0.01
STUDY = "robust-demo"


def trial_spec(
    norm: str, lr: float, seed: int, acc: float | None, state: str = "COMPLETE"
) -> dict[str, Any]:
    return {"norm": norm, "lr": lr, "seed": seed, "acc": acc, "state": state}


def known_trials() -> list[dict[str, Any]]:
    """24 COMPLETE trials (3 variants x 4 lrs x 2 seeds) + one each PRUNED, FAIL, RUNNING."""
    specs = []
    for lr_index, lr in enumerate(LRS):
        for norm, accs in TRUTH.items():
            for seed, offset in SEED_OFFSETS.items():
                acc = accs[lr_index]
                specs.append(trial_spec(norm, lr, seed, None if acc is None else acc + offset))
    specs.append(trial_spec("l2", 0.1, 2, 0.99, "PRUNED"))
    specs.append(trial_spec("none", 10.0, 2, 0.99, "FAIL"))
    specs.append(trial_spec("l1", 0.01, 2, 0.99, "RUNNING"))
    return specs


def write_study(
    url: str,
    name: str,
    specs: Iterable[Mapping[str, Any]],
    *,
    config: Mapping[str, Any] | None = None,
    model: str = "mlp",
    dataset: str = "digits",
    with_optuna: bool = True,
    epochs: int = 3,
) -> None:
    """Write `specs` as trials 0..n-1 of study `name` (ours and, optionally, Optuna's)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from storage import ResultWriter, open_database

    engine = open_database(url)
    writer = ResultWriter(engine)
    writer.create_study(name, dict(config or {"sampler": "grid"}), code_version="test")
    specs = list(specs)
    for number, spec in enumerate(specs):
        sgd = spec["norm"] == "none"
        diverged = spec["acc"] is None
        final = 0.1 if diverged else spec["acc"]
        fields = {
            "optimizer": "sgd" if sgd else "insgd",
            "norm": spec["norm"],
            "normalizer": "log",
            "granularity": "layer",
            "lr": spec["lr"],
            "eps": None if sgd else EPS,
            "seed": spec["seed"],
            "model": model,
            "dataset": dataset,
            "batch_size": 64,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "epochs": epochs,
        }
        if spec["state"] == "RUNNING":
            writer.start_trial(name, number, fields)
            continue
        curve = [
            {
                "epoch": e,
                "train_loss": float("nan") if diverged else 1.0 / e,
                "train_accuracy": final,
                "val_loss": 1.0,
                "val_accuracy": final * e / epochs,
                "lr": spec["lr"],
                "epoch_seconds": 0.1,
                "images_per_second": 1000.0,
                "diverged": diverged and e == epochs,
            }
            for e in range(1, epochs + 1)
        ]
        writer.finish_trial(
            name, number, {**fields, "state": spec["state"], "diverged": diverged}, curve
        )
    if not with_optuna:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    dists: dict[str, Any] = {
        "norm": CategoricalDistribution(["none", "l1", "l2"]),
        "lr": FloatDistribution(1e-3, 10.0, log=True),
        "eps": FloatDistribution(1e-3, 1.0, log=True),
    }
    states = {
        "COMPLETE": optuna.trial.TrialState.COMPLETE,
        "PRUNED": optuna.trial.TrialState.PRUNED,
        "FAIL": optuna.trial.TrialState.FAIL,
        "RUNNING": optuna.trial.TrialState.RUNNING,
    }
    for spec in specs:
        params = {"norm": spec["norm"], "lr": spec["lr"]}
        if spec["norm"] != "none":
            params["eps"] = EPS
        complete = spec["state"] == "COMPLETE"
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=(spec["acc"] or 0.0) if complete else None,
                state=states[spec["state"]],
            )
        )
    storage.engine.dispose()


@pytest.fixture(scope="module")
def known_study_url(tmp_path_factory) -> str:
    """A SQLite database holding the study `STUDY` built from `known_trials()`."""
    path = tmp_path_factory.mktemp("known") / "studies.db"
    url = f"sqlite:///{path}"
    write_study(url, STUDY, known_trials())
    return url


@pytest.fixture
def data() -> SimpleNamespace:
    """The helpers above, for tests (conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(
        STUDY=STUDY,
        LRS=LRS,
        EPS=EPS,
        write_study=write_study,
        known_trials=known_trials,
        trial_spec=trial_spec,
    )
