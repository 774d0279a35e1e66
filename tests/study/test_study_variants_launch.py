"""A real `insgd-study launch` (its own local Ray, as a process) of a grid with the frozen
control beside SGD and INSGD-l2 in one study: the results rows carry each trial's variant,
optimizer, norm and beta, Optuna's trials a `variant` parameter, and `insgd-study query`
filters on the variant and shows beta."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import optuna
import pytest
import study_helpers as helpers

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("sgd", "insgd-l2", "insgd-l2-frozen")
pytestmark = pytest.mark.slow


def test_a_grid_runs_the_frozen_control_beside_sgd_and_insgd(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    argv = [
        sys.executable,
        "-m",
        "study",
        "launch",
        "--storage",
        url,
        "--name",
        "frozen",
        "--results-dir",
        str(tmp_path / "ray"),
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--variants",
        ",".join(VARIANTS),
        "--sampler",
        "grid",
        "--lr-points",
        "2",
        "--lr-min",
        "0.01",
        "--lr-max",
        "0.1",
        "--epochs",
        "1",
        "--max-concurrent",
        "2",
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "grid over sgd,insgd-l2,insgd-l2-frozen, 0 of 6 trials finished" in proc.stdout
    assert "insgd-l2-frozen" in proc.stdout.split("best configuration per variant")[1]

    rows = helpers.trials(url, "frozen")
    assert len(rows) == 6 and {r.state for r in rows} == {"COMPLETE"}
    assert sorted((r.variant, r.lr) for r in rows) == sorted(
        (v, lr) for v in VARIANTS for lr in (0.01, 0.1)
    )
    trained = {(r.variant, r.optimizer, r.norm, r.beta, r.eps) for r in rows}
    assert trained == {
        ("sgd", "sgd", "none", None, None),
        ("insgd-l2", "insgd", "l2", None, 0.01),  # beta None: TrainConfig's, = momentum
        ("insgd-l2-frozen", "insgd", "l2", 1.0, 0.01),
    }
    for row in rows:  # the whole TrainConfig the worker trained, as the row keeps it
        assert row.params["beta"] == (1.0 if row.variant == "insgd-l2-frozen" else None)
        assert row.epochs_completed == 1

    ot = helpers.optuna_trials(url, "frozen")
    assert len(ot) == 6 and {t.state for t in ot} == {optuna.trial.TrialState.COMPLETE}
    by_number = {r.trial_number: r for r in rows}
    for trial in ot:
        variant = trial.params["variant"]
        assert trial.distributions["variant"] == optuna.distributions.CategoricalDistribution(
            VARIANTS
        )
        assert set(trial.params) == (
            {"variant", "lr"} if variant == "sgd" else {"variant", "lr", "eps"}
        )
        assert trial.user_attrs["variant"] == variant
        (number,) = trial.user_attrs["trial_numbers"]
        assert by_number[number].variant == variant
        assert by_number[number].lr == pytest.approx(trial.params["lr"])

    from study import cli

    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(
            ["query", "--storage", url, "--where", "variant=insgd-l2-frozen", "--format", "json"]
        )
    records = json.loads(out.getvalue())
    assert code == 0 and len(records) == 2
    assert {(r["variant"], r["norm"], r["beta"]) for r in records} == {
        ("insgd-l2-frozen", "l2", 1.0)
    }
