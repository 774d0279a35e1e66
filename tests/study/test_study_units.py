"""Fast tests of the study's pure parts: config merging, the space, the plan, the searcher.

No Ray cluster starts here; the searcher runs against a real in-memory Optuna study.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from study.config import StudyConfig, load_toml, merge, normalize_mapping
from study.errors import UsageError
from study.run.progress import best_per_variant, format_seconds, summary_table, trial_seconds
from study.run.runner import make_plan
from study.run.trial_config import TrialTemplates
from study.search.samplers import make_sampler
from study.search.searcher import METRIC, SeededSearch, StudyOptunaSearch
from study.search.space import Point, define_space, grid_points, log_points


def test_defaults_are_the_default_study():
    merged = merge()
    config = merged.config
    assert (config.dataset, config.model, config.sampler) == ("digits", "mlp", "grid")
    assert config.variants == ("sgd", "insgd-l1", "insgd-l2")
    assert config.seeds == 1 and config.trials is None
    lrs = sorted({p.lr for p in grid_points(config)})
    assert len(lrs) == 7 and lrs[0] == 1e-3 and lrs[-1] == 10.0
    assert config.target_trials == len(grid_points(config)) == 21
    assert merged.explicit == frozenset()


def test_precedence_preset_toml_flags(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('epochs = 3\nlr-max = 1.0\nnorms = ["none", "l2"]\n[train]\nmomentum = 0.5\n')
    merged = merge(
        preset={"epochs": 2, "batch_size": 16}, toml=load_toml(path), flags={"lr_max": 0.5}
    )
    config = merged.config
    assert config.batch_size == 16  # preset
    assert config.epochs == 3  # TOML beats preset
    assert config.lr_max == 0.5  # flag beats TOML
    assert config.variants == ("sgd", "insgd-l2")  # TOML `norms`: the shorthand
    assert config.train == {"momentum": 0.5}
    assert config.train_config("insgd-l2", 0.1, None, seed=3).momentum == 0.5
    assert {"epochs", "batch_size", "lr_max", "variants", "train"} <= merged.explicit
    assert "norms" not in merged.explicit


def test_trials_without_sampler_means_tpe_and_grid_rejects_contradiction():
    assert merge(flags={"trials": 6}).config.sampler == "tpe"
    with pytest.raises(UsageError, match="contradicts the grid"):
        merge(flags={"sampler": "grid", "trials": 5})
    assert merge(flags={"sampler": "grid", "trials": 21}).config.target_trials == 21
    with pytest.raises(UsageError, match="required"):
        merge(flags={"sampler": "random"})
    with pytest.raises(UsageError, match="multiple of --seeds"):
        merge(flags={"trials": 5, "seeds": 2})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"lr_min": 1.0, "lr_max": 0.1}, "--lr-min 1 is above --lr-max 0.1"),
        ({"lr_min": 0.0}, "--lr-min must be a positive number"),
        ({"eps_max": -1.0}, "--eps-max must be a positive number"),
        ({"epochs": 0}, "--epochs must be an integer >= 1"),
        ({"seeds": 0}, "--seeds must be an integer >= 1"),
        ({"sampler": "anneal"}, "--sampler must be one of"),
        ({"scheduler": "pbt"}, "--scheduler must be one of"),
        ({"norms": ("none", "l3")}, "unknown variant 'l3'"),
        ({"norms": ("l1", "l1")}, "twice"),
        ({"dataset": "svhn"}, "--dataset: unknown dataset 'svhn'"),
        ({"model": "vgg"}, "--model: unknown model 'vgg'"),
        ({"name": "no spaces"}, "--name must be"),
        ({"gpus_per_trial": 1.5}, "--gpus-per-trial must be at most 1"),
        ({"cpus_per_trial": 0.0}, "--cpus-per-trial must be a number > 0"),
        ({"train": {"lr": 0.1}}, r"\[train\] must not set lr"),
        ({"train": {"momentum": 2.0}}, r"\[train\]: momentum must be in"),
        ({"train": {"colour": 1}}, r"\[train\]: unknown training option"),
    ],
)
def test_bad_values_name_the_problem(flags, message):
    with pytest.raises(UsageError, match=message):
        merge(flags=flags)


def test_toml_types_and_keys_are_checked(tmp_path):
    with pytest.raises(UsageError, match="epochs must be an integer; got str 'ten'"):
        normalize_mapping({"epochs": "ten"}, source="x.toml")
    with pytest.raises(UsageError, match="unknown key 'learning_rate'"):
        normalize_mapping({"learning_rate": 0.1}, source="x.toml")
    with pytest.raises(UsageError, match="must be a list of variant names"):
        normalize_mapping({"norms": 5}, source="x.toml")
    assert normalize_mapping({"lr-min": 1}, source="x")["lr_min"] == 1.0  # int is a number
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(UsageError, match="malformed TOML"):
        load_toml(bad)
    with pytest.raises(UsageError, match="config file not found"):
        load_toml(tmp_path / "missing.toml")


def test_resume_keeps_the_stored_study_and_refuses_conflicting_flags():
    stored = merge(flags={"trials": 8, "seeds": 2, "lr_max": 1.0}).config.study_dict()
    resumed = merge(flags={"resume": True, "name": "default"}).resumed_from(stored)
    assert (resumed.sampler, resumed.trials, resumed.seeds, resumed.lr_max) == ("tpe", 8, 2, 1.0)
    grown = merge(flags={"resume": True, "trials": 12}).resumed_from(stored)
    assert grown.target_trials == 12
    with pytest.raises(UsageError, match="lr_max: stored 1.0, given 10.0"):
        merge(flags={"resume": True, "lr_max": 10.0}).resumed_from(stored)
    assert merge(flags={"trials": 8, "seeds": 2, "lr_max": 1.0}).config.differences(stored) == []
    assert merge(flags={"trials": 8, "seeds": 2}).config.differences(stored)


def test_grid_points_are_exact_and_eps_is_insgd_only():
    config = merge(
        flags={
            "lr_points": 3,
            "eps_points": 2,
            "lr_min": 0.01,
            "lr_max": 1.0,
            "eps_min": 0.001,
            "eps_max": 0.1,
        }
    ).config
    points = grid_points(config)
    assert len(points) == config.target_trials == 3 * (1 + 2 * 2)
    assert len({(p.variant, p.lr, p.eps) for p in points}) == len(points)
    assert all(p.eps is None for p in points if p.variant == "sgd")
    assert {p.eps for p in points if p.variant != "sgd"} == {0.001, 0.1}
    assert [round(x, 12) for x in log_points(0.01, 1.0, 3)] == [0.01, 0.1, 1.0]
    one = merge(flags={"norms": ("l2",), "lr_points": 1, "lr_min": 0.1, "lr_max": 0.1}).config
    assert grid_points(one) == [Point("insgd-l2", 0.1, 0.01)]  # one eps point: the default


def test_define_space_makes_eps_conditional():
    config = merge(flags={"trials": 20}).config
    study = optuna.create_study(sampler=make_sampler(config), direction="maximize")
    space = define_space(config)
    for _ in range(20):
        trial = study.ask()
        assert space(trial) == trial.params  # what it suggested: no captor needed
        assert ("eps" in trial.params) == (trial.params["variant"] != "sgd")
        assert config.lr_min <= trial.params["lr"] <= config.lr_max
        study.tell(trial, 0.5)
    assert {t.params["variant"] for t in study.trials} == {"sgd", "insgd-l1", "insgd-l2"}


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_study_search_suggests_and_tells_what_rays_optuna_search_does(sampler):
    """StudyOptunaSearch skips Ray's captor and `Study.tell`'s copy; the configurations
    and Optuna's trials (states, values) are the same as through Ray's own OptunaSearch
    with the same seeded sampler: complete, pruned (no result) and failed trials."""
    config = merge(flags={"trials": 12, "sampler": sampler, "sampler_seed": 3}).config
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    searches = [
        kind(define_space(config), metric=METRIC, mode="max", sampler=make_sampler(config))
        for kind in (StudyOptunaSearch, OptunaSearch)
    ]
    for i in range(12):
        ours, rays = (search.suggest(f"t{i}") for search in searches)
        assert ours == rays
        assert ("eps" in ours) == (ours["variant"] != "sgd")
        for search in searches:
            if i % 4 == 1:
                search.on_trial_complete(f"t{i}", None)  # stopped early: PRUNED
            elif i % 4 == 2:
                search.on_trial_complete(f"t{i}", None, error=True)  # FAIL
            else:  # COMPLETE with a value TPE learns from
                search.on_trial_complete(f"t{i}", {METRIC: ours["lr"]})
            search.on_trial_complete(f"t{i}", {METRIC: 0.0})  # a second one is ignored
    ours, rays = (search._ot_study.trials for search in searches)
    assert [(t.params, t.state, t.values) for t in ours] == [
        (t.params, t.state, t.values) for t in rays
    ]
    assert {t.state.name for t in ours} == {"COMPLETE", "PRUNED", "FAIL"}


def test_every_sampler_builds():
    for name in ("tpe", "random", "qmc"):
        assert make_sampler(merge(flags={"trials": 4, "sampler": name}).config) is not None
    assert make_sampler(merge().config) is not None


def _searcher(config, *, rows=(), name="unit", writes=None, ask_ahead=False, storage=None):
    """The searcher a launch builds (on an in-memory Optuna study unless `storage` is
    given), and its OptunaSearch."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    inner = StudyOptunaSearch(
        define_space(config),
        metric=METRIC,
        mode="max",
        sampler=make_sampler(config),
        study_name=name,
        storage=storage,
    )
    plan = make_plan(config, list(rows), {})
    search = SeededSearch(
        inner,
        config,
        fixed=plan.groups,
        sample=plan.sample,
        budget=plan.budget,
        first_number=plan.first_number,
        writes=writes,
        ask_ahead=ask_ahead,
    )
    return search, inner


def test_seeded_search_groups_seeds_and_reports_means():
    config = merge(flags={"trials": 4, "seeds": 2, "sampler_seed": 1, "epochs": 2}).config
    search, inner = _searcher(config)
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert search.suggest("t4") == "FINISHED"
    assert [c["trial_number"] for c in configs] == [0, 1, 2, 3]
    assert [c["seed"] for c in configs] == [0, 1, 0, 1]
    assert configs[0]["lr"] == configs[1]["lr"] and configs[2]["lr"] != configs[0]["lr"]
    # Tune carries each trial's own values only; the templates give the rest
    assert set(configs[0]) == {"trial_number", "variant", "lr", "eps", "seed", "optuna_trial"}
    templates = TrialTemplates.for_study(config)
    for c in configs:
        expected = config.train_config(c["variant"], c["lr"], c["eps"], c["seed"]).to_dict()
        assert templates.options(c) == expected
    # group 1: both seeds run two epochs; group 2: seed 1 is stopped early by a scheduler
    for trial_id, accs in (("t0", (0.5, 0.7)), ("t1", (0.3, 0.5))):
        for epoch, acc in enumerate(accs, 1):
            search.on_trial_result(trial_id, {METRIC: acc, "epoch": epoch, "diverged": False})
    search.on_trial_complete("t0", {METRIC: 0.7, "epoch": 2, "diverged": False})
    search.on_trial_complete("t1", {METRIC: 0.5, "epoch": 2, "diverged": False})
    search.on_trial_result("t2", {METRIC: 0.9, "epoch": 1, "diverged": False})
    search.on_trial_complete("t3", {METRIC: 0.1, "epoch": 1, "diverged": False})
    search.on_trial_complete("t2", {METRIC: 0.9, "epoch": 2, "diverged": False})
    first, second = inner._ot_study.trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert math.isclose(first.value, 0.6)
    assert first.intermediate_values == pytest.approx({1: 0.4, 2: 0.6})
    assert first.user_attrs["trial_numbers"] == [0, 1]
    assert first.user_attrs["variant"] in ("sgd", "insgd-l1", "insgd-l2")
    assert second.state == optuna.trial.TrialState.PRUNED
    assert second.intermediate_values == pytest.approx({1: 0.5, 2: 0.9})


def test_user_attrs_on_rdb_storage_are_written_in_one_session_as_set_user_attr_would(tmp_path):
    from sqlalchemy import event

    from study.run.runner import optuna_rdb_storage
    from study.search.optuna_storage import DriverStorage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    rdb = optuna_rdb_storage(url)
    study = optuna.create_study(storage=DriverStorage(rdb), study_name="attrs")
    config = merge(flags={"trials": 1, "sampler": "random"}).config
    search = StudyOptunaSearch(
        define_space(config), metric=METRIC, mode="max", study_name="attrs", storage=study._storage
    )
    search.suggest("batched")
    batched = search._ot_trials["batched"]
    single = study.ask()
    attrs = {"variant": "insgd-l2", "diverged": True, "trial_numbers": [3, 4]}
    commits: list[int] = []
    event.listen(rdb.engine, "commit", lambda conn: commits.append(1))
    search.set_user_attrs("batched", attrs)
    assert len(commits) == 1  # one transaction, not one per attribute
    for name, value in attrs.items():
        single.set_user_attr(name, value)
    assert batched.user_attrs == attrs  # the trial object's own view is kept current
    batched.report(0.5, 1)  # still RUNNING and writable after the batched write
    study.tell(batched, 0.5)
    study.tell(single, 0.5)
    reread = optuna.load_study(study_name="attrs", storage=optuna_rdb_storage(url)).trials
    assert reread[0].user_attrs == reread[1].user_attrs == attrs
    # a finished trial refuses the write like set_user_attr does
    with pytest.raises(RuntimeError):
        study._storage.set_trial_user_attrs(batched._trial_id, {"variant": "sgd"})
    # any other storage: one set_user_attr per attribute, same result
    memory = StudyOptunaSearch(define_space(config), metric=METRIC, mode="max")
    memory.suggest("m")
    memory.set_user_attrs("m", attrs)
    assert memory._ot_trials["m"].user_attrs == attrs


def test_seeded_search_counts_divergence_as_zero_and_errors_as_fail():
    config = merge(flags={"trials": 3, "sampler": "random", "epochs": 3}).config
    search, inner = _searcher(config)
    for trial_id in "abc":
        search.suggest(trial_id)
    search.on_trial_complete("a", {METRIC: 0.1, "epoch": 1, "diverged": True})
    search.on_trial_complete("b", error=True)
    search.on_trial_complete("c")  # removed before it ever ran (an interrupted launch)
    diverged, failed, never_ran = inner._ot_study.trials
    assert diverged.state == optuna.trial.TrialState.COMPLETE and diverged.value == 0.0
    assert diverged.user_attrs["diverged"] is True
    assert failed.state == optuna.trial.TrialState.FAIL
    assert never_ran.state == optuna.trial.TrialState.FAIL


def _row(number, state, norm, lr, eps, seed, acc=0.5, diverged=False):
    return SimpleNamespace(
        trial_number=number,
        state=state,
        norm=norm,
        lr=lr,
        eps=eps,
        seed=seed,
        final_val_accuracy=acc,
        diverged=diverged,
        epochs_completed=2,
    )


def test_plan_resumes_a_grid_with_missing_seeds_and_new_numbers():
    config = merge(flags={"lr_points": 2, "variants": ("sgd", "insgd-l2"), "seeds": 2}).config
    points = grid_points(config)  # 4 points x 2 seeds = 8 trials
    rows = [
        _row(0, "COMPLETE", "none", points[0].lr, None, 0),
        _row(1, "COMPLETE", "none", points[0].lr, None, 1),
        _row(2, "COMPLETE", "l2", points[1].lr, 0.01, 0),
        _row(3, "FAIL", "l2", points[1].lr, 0.01, 1),  # killed: its seed must re-run
    ]
    plan = make_plan(config, rows, {})
    assert plan.finished == 3 and plan.budget == 5 and plan.first_number == 4
    todo = {(g.point.variant, g.point.lr, s) for g in plan.groups for s in g.todo}
    assert ("insgd-l2", points[1].lr, 1) in todo
    assert ("sgd", points[0].lr, 0) not in todo
    assert sum(len(g.todo) for g in plan.groups) == 5


def test_plan_of_a_sampled_study_reruns_failed_configurations_first():
    config = merge(flags={"trials": 4, "seeds": 1}).config
    rows = [_row(0, "COMPLETE", "l1", 0.05, 0.02, 0), _row(1, "FAIL", "none", 0.3, None, 0)]
    plan = make_plan(config, rows, {})
    assert plan.budget == 3 and plan.sample and plan.first_number == 2
    assert [(g.point, list(g.todo)) for g in plan.groups] == [(Point("sgd", 0.3), [0])]


def test_summary_picks_the_best_mean_per_variant():
    rows = [
        _row(0, "COMPLETE", "none", 0.1, None, 0, 0.90),
        _row(1, "COMPLETE", "none", 0.1, None, 1, 0.80),
        _row(2, "COMPLETE", "none", 1.0, None, 0, 0.95, diverged=True),
        _row(3, "COMPLETE", "l2", 1.0, 0.01, 0, 0.91),
        _row(4, "PRUNED", "l2", 3.0, 0.01, 0, 0.99),
    ]
    best = best_per_variant(rows)
    assert [(b.variant, b.lr) for b in best] == [("sgd", 0.1), ("insgd-l2", 1.0)]
    assert math.isclose(best[0].mean, 0.85)
    table = summary_table(rows)
    assert "insgd-l2" in table and "4 COMPLETE, 1 PRUNED" in table
    assert format_seconds(75) == "1m15s" and format_seconds(3700) == "1h01m"


def test_study_dict_round_trips_through_json():
    import json

    config = merge(flags={"variants": ("insgd-l1", "sgd")}).config
    stored = json.loads(json.dumps(config.study_dict()))
    assert "norms" not in stored and stored["variants"] == ["insgd-l1", "sgd"]
    assert config.differences(stored) == []
    assert StudyConfig(
        **{**{k: v for k, v in stored.items() if k != "variants"}, "variants": ("insgd-l1", "sgd")}
    ).variants == ("insgd-l1", "sgd")


def test_qmc_and_random_sample_the_conditional_space():
    for name in ("qmc", "random"):
        config = merge(flags={"trials": 16, "sampler": name, "sampler_seed": 0}).config
        study = optuna.create_study(sampler=make_sampler(config), direction="maximize")
        for _ in range(16):
            trial = study.ask()
            define_space(config)(trial)
            assert ("eps" in trial.params) == (trial.params["variant"] != "sgd")
            if "eps" in trial.params:
                assert config.eps_min <= trial.params["eps"] <= config.eps_max
            study.tell(trial, trial.params["lr"])
        assert len({t.params["lr"] for t in study.trials}) == 16


#: The templates of the fake trials' study (three epochs, the defaults otherwise).
FAKE_TEMPLATES = TrialTemplates.for_study(StudyConfig(epochs=3))


def _fake_trial(number, variant, last, error=None):
    return SimpleNamespace(
        trial_id=f"t{number}",
        num_failures=0,
        last_result=last,
        config={
            "trial_number": number,
            "variant": variant,
            "lr": 0.1,
            "eps": None if variant == "sgd" else 0.01,
            "seed": 1,
            "optuna_trial": number,
        },
        get_pickled_error=lambda: error,
        get_error=lambda: None,
    )


def test_recorder_writes_complete_pruned_and_failed_trials(tmp_path):
    import storage
    from study.run.recorder import Recorder

    engine = storage.open_database(f"sqlite:///{tmp_path / 'r.db'}")
    writer = storage.ResultWriter(engine)
    writer.create_study("r", {"x": 1}, "test")
    recorder = Recorder(writer, "r", 3, FAKE_TEMPLATES)
    where = {"node_id": "node-a", "hostname": "host-a", "device_name": "cpu (test)"}

    def epoch(n, acc, diverged=False):
        return {
            "epoch": n,
            "train_loss": 1.0,
            "train_accuracy": acc,
            "val_loss": 1.0,
            "val_accuracy": acc,
            "lr": 0.1,
            "epoch_seconds": 0.1,
            "images_per_second": 10.0,
            "diverged": diverged,
            "time_total_s": n * 0.1,
            **where,
        }

    cases = [
        (0, "sgd", [epoch(1, 0.5), epoch(2, 0.6), epoch(3, 0.7)], None),  # finished
        (1, "insgd-l2", [epoch(1, 0.2)], None),  # stopped by the scheduler after 1 of 3 epochs
        (2, "insgd-l1", [epoch(1, 0.1, diverged=True)], None),  # diverged: ends early, COMPLETE
        (3, "insgd-l2", [epoch(1, 0.4)], RuntimeError("Traceback ...\nValueError: boom")),
    ]
    for number, variant, results, error in cases:
        trial = _fake_trial(number, variant, results[-1], error)
        recorder.on_trial_start(0, [], trial)
        recorder.on_step_end(0, [])  # each event is a step of Tune's loop
        for result in results:
            recorder.on_trial_result(0, [], trial, result)
            recorder.on_step_end(0, [])
        if error is None:
            recorder.on_trial_complete(0, [], trial)
        else:
            recorder.on_trial_error(0, [], trial)
        recorder.on_step_end(0, [])
    recorder.on_experiment_end([])
    rows = {r.trial_number: r for r in storage.queries.list_trials(engine, "r")}
    assert rows[0].state == "COMPLETE" and rows[0].epochs_completed == 3
    assert rows[0].final_val_accuracy == 0.7 and rows[0].eps is None and rows[0].seed == 1
    assert (rows[0].node_id, rows[0].hostname, rows[0].device_name) == tuple(where.values())
    assert rows[1].state == "PRUNED" and rows[1].stopped_early and rows[1].epochs_completed == 1
    assert rows[2].state == "COMPLETE" and rows[2].diverged and not rows[2].stopped_early
    assert rows[3].state == "FAIL" and "ValueError: boom" in rows[3].error
    assert rows[3].eps == pytest.approx(0.01) and rows[3].norm == "l2"
    assert [rows[n].variant for n in range(4)] == ["sgd", "insgd-l2", "insgd-l1", "insgd-l2"]
    assert rows[0].norm == "none" and rows[2].optimizer == "insgd"
    assert all(r.params["worker_failures"] == 0 for r in rows.values())


def test_every_preset_is_a_valid_study_and_default_is_the_default():
    from study.cli import build_parser
    from study.commands.launch import merged_config
    from study.presets import PRESETS

    parser = build_parser()
    default = merged_config(parser.parse_args(["launch", "--preset", "default"])).config
    assert default == merge().config
    for name in PRESETS:
        config = merged_config(parser.parse_args(["launch", "--preset", name])).config
        assert config.target_trials > 0
    with_flag = merged_config(parser.parse_args(["launch", "--preset", "default", "--seeds", "2"]))
    assert with_flag.config.seeds == 2 and with_flag.config.target_trials == 42


def test_trial_seconds_keep_a_fixed_column_and_show_millisecond_trials() -> None:
    assert trial_seconds(None) == "      ?"
    assert trial_seconds(0.0123) == "  0.01s"  # a digits-MLP trial is not "0.0s"
    assert trial_seconds(3.456) == "  3.46s"
    assert trial_seconds(12.34) == "  12.3s"
    assert {len(trial_seconds(v)) for v in (None, 0.01, 9.5, 99.0, 9999.0)} == {7}


def test_end_of_study_report_outcomes_are_said_after_the_thread_that_drew_it(capsys) -> None:
    """The report is drawn on a thread of its own (`_report_in_background`); what it did
    is said from the launch's thread: where it went, one warning line when it could not
    be built (the study's results are safe anyway), and any other error raised there."""
    import io
    from concurrent.futures import Future

    from storage.errors import StorageError
    from study.run.runner import _say_report

    def done(result: object = None, error: BaseException | None = None) -> Future:
        future: Future = Future()
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
        return future

    out = io.StringIO()
    _say_report(done(["report.html", "accuracy_vs_lr.png"]), out)
    assert out.getvalue() == "report attached to the Optuna study (2 files) for the dashboard\n"
    out = io.StringIO()
    _say_report(done([]), out)  # no Optuna study of that name: nothing to say
    assert out.getvalue() == ""
    for error in (StorageError("database is locked"), UsageError("no COMPLETE trial")):
        _say_report(done(error=error), out)
        said = capsys.readouterr()
        assert said.err == f"warning: report not attached to the dashboard: {error}\n"
    assert out.getvalue() == ""
    with pytest.raises(RuntimeError, match="a bug"):
        _say_report(done(error=RuntimeError("a bug")), out)


def test_a_dead_workers_traceback_is_kept_off_stderr_unless_verbose():
    """Tune logs "Trial task failed" with the exception's traceback at ERROR: for a worker
    that died (the trial restarts, and the progress says so in one line) it is dropped,
    an error of the training code itself is kept, and --verbose keeps everything."""
    import logging

    from ray.exceptions import ActorDiedError, RayTaskError

    from study.run.raysetup import TUNE_CONTROLLER_LOGGER, WorkerDeathFilter, silence_loggers

    names = ("ray", "ray.tune", "ray.train", "ray.air", "optuna", TUNE_CONTROLLER_LOGGER)
    levels = {name: logging.getLogger(name).level for name in names}
    controller = logging.getLogger(TUNE_CONTROLLER_LOGGER)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.exc_info[1].__class__.__name__)

    handler = Keep()
    controller.addHandler(handler)

    def log(error):
        try:
            raise error
        except Exception as exc:  # noqa: BLE001 - logged as Tune does
            controller.error("Trial task failed for trial run_trial_0001", exc_info=exc)

    task_error = RayTaskError("run_trial", "Traceback ...\nValueError: bad", ValueError("bad"))
    try:
        silence_loggers(False)
        silence_loggers(False)  # twice (a second launch in one process): one filter
        assert sum(isinstance(f, WorkerDeathFilter) for f in controller.filters) == 1
        log(ActorDiedError())
        log(task_error)
        assert seen == ["RayTaskError"]
        silence_loggers(True)
        log(ActorDiedError())
        assert seen == ["RayTaskError", "ActorDiedError"]
    finally:
        controller.removeHandler(handler)
        silence_loggers(True)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
