"""A real `insgd-study launch` (its own local Ray, as a process) of a grid with the frozen
control beside SGD and INSGD-l2 in one study: the results rows carry each trial's variant,
optimizer, norm and beta, Optuna's trials a `variant` parameter, and `insgd-study query`
filters on the variant and shows beta.

The launch is tests/conftest.py's session-wide `frozen_study`, which
tests/analysis/test_analysis_frozen_study.py reads too (one launch for both)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import optuna
import pytest
import study_helpers as helpers

pytestmark = pytest.mark.slow


def test_a_grid_runs_the_frozen_control_beside_sgd_and_insgd(frozen_study):
    url, variants, lrs = frozen_study.url, frozen_study.variants, frozen_study.lrs
    out = frozen_study.stdout
    trials = len(variants) * len(lrs) * frozen_study.seeds
    assert f"grid over {','.join(variants)}, 0 of {trials} trials finished" in out
    assert "insgd-l2-frozen" in out.split("best configuration per variant")[1]

    rows = helpers.trials(url, frozen_study.name)
    assert len(rows) == trials and {r.state for r in rows} == {"COMPLETE"}
    assert sorted((r.variant, round(r.lr, 12), r.seed) for r in rows) == sorted(
        (v, lr, seed) for v in variants for lr in lrs for seed in range(frozen_study.seeds)
    )
    trained = {(r.variant, r.optimizer, r.norm, r.beta, r.eps) for r in rows}
    assert trained == {
        ("sgd", "sgd", "none", None, None),
        ("insgd-l2", "insgd", "l2", None, 0.01),  # beta None: TrainConfig's, = momentum
        ("insgd-l2-frozen", "insgd", "l2", 1.0, 0.01),
    }
    for row in rows:  # the whole TrainConfig the worker trained, as the row keeps it
        assert row.params["beta"] == (1.0 if row.variant == "insgd-l2-frozen" else None)
        assert row.epochs_completed == frozen_study.epochs or row.diverged

    ot = helpers.optuna_trials(url, frozen_study.name)
    assert len(ot) == len(variants) * len(lrs)  # one Optuna trial per configuration
    assert {t.state for t in ot} == {optuna.trial.TrialState.COMPLETE}
    by_number = {r.trial_number: r for r in rows}
    for trial in ot:
        variant = trial.params["variant"]
        assert trial.distributions["variant"] == optuna.distributions.CategoricalDistribution(
            variants
        )
        assert set(trial.params) == (
            {"variant", "lr"} if variant == "sgd" else {"variant", "lr", "eps"}
        )
        assert trial.user_attrs["variant"] == variant
        members = [by_number[n] for n in trial.user_attrs["trial_numbers"]]
        assert sorted(m.seed for m in members) == list(range(frozen_study.seeds))
        for member in members:
            assert member.variant == variant
            assert member.lr == pytest.approx(trial.params["lr"])

    from study import cli

    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(
            ["query", "--storage", url, "--where", "variant=insgd-l2-frozen", "--format", "json"]
        )
    records = json.loads(out.getvalue())
    assert code == 0 and len(records) == len(lrs) * frozen_study.seeds
    assert {(r["variant"], r["norm"], r["beta"]) for r in records} == {
        ("insgd-l2-frozen", "l2", 1.0)
    }
