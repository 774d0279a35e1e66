"""Study variants (`study.config.VARIANTS`): the frozen-normalizer controls side by side with
SGD and INSGD in one study. Config parsing (``--variants``, TOML, the ``--norms``
shorthand), each variant's TrainConfig, the grid and the Optuna space, and reading what
studies launched before variants existed stored (their "norm" parameter, their `norms`).

No Ray here; the real launch is `test_study_variants_launch.py`.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest

import storage
from study.cli import build_parser
from study.commands.launch import merged_config
from study.config import (
    DEFAULT_VARIANTS,
    VARIANTS,
    StudyConfig,
    load_toml,
    merge,
    variant_of,
    variant_settings,
)
from study.errors import UsageError
from study.run.progress import best_per_variant, summary_table
from study.run.runner import make_plan, prepare
from study.search.samplers import make_sampler
from study.search.space import Point, define_space, grid_points, row_point, row_variant

FROZEN_STUDY = ("sgd", "insgd-l2", "insgd-l2-frozen")


def _launch(*argv: str):
    return merged_config(build_parser().parse_args(["launch", *argv]))


def test_the_variants_their_order_and_what_each_trains():
    assert VARIANTS == ("sgd", "insgd-l1", "insgd-l2", "insgd-l1-frozen", "insgd-l2-frozen")
    assert DEFAULT_VARIANTS == ("sgd", "insgd-l1", "insgd-l2") == StudyConfig().variants
    assert [tuple(variant_settings(v)) for v in VARIANTS] == [
        ("sgd", "none", None),
        ("insgd", "l1", None),
        ("insgd", "l2", None),
        ("insgd", "l1", 1.0),
        ("insgd", "l2", 1.0),
    ]
    with pytest.raises(ValueError, match="unknown variant 'insgd-l3'"):
        variant_settings("insgd-l3")
    # and back: the variant a results row's optimizer, norm and beta say
    for variant in VARIANTS:
        optimizer, norm, beta = variant_settings(variant)
        assert variant_of(optimizer, norm, beta) == variant
    assert variant_of("sgd", "l2", 1.0) == variant_of("insgd", None, None) == "sgd"
    assert variant_of("insgd", "l2", 0.9) == "insgd-l2"


def test_variants_flag_toml_list_and_comma_string(tmp_path):
    merged = _launch("--variants", "sgd, insgd-l2,insgd-l2-frozen")
    assert merged.config.variants == FROZEN_STUDY and "variants" in merged.explicit
    for text in (
        'variants = ["insgd-l1", "insgd-l1-frozen"]\n',
        'variants = "insgd-l1,insgd-l1-frozen"\n',
    ):
        path = tmp_path / "study.toml"
        path.write_text(text)
        assert merge(toml=load_toml(path)).config.variants == ("insgd-l1", "insgd-l1-frozen")
    # flags beat the TOML file, whichever spelling either uses
    path.write_text('norms = ["none", "l1"]\n')
    assert _launch(str(path), "--variants", "insgd-l2-frozen").config.variants == (
        "insgd-l2-frozen",
    )
    path.write_text('variants = ["insgd-l2-frozen"]\n')
    assert _launch(str(path), "--norms", "l1").config.variants == ("insgd-l1",)


def test_norms_is_a_shorthand_and_may_repeat_the_variants_it_names(tmp_path):
    merged = _launch("--norms", "none,l2")
    assert merged.config.variants == ("sgd", "insgd-l2")
    assert "variants" in merged.explicit and "norms" not in merged.explicit
    assert _launch("--norms", "l2,none").config.variants == ("insgd-l2", "sgd")
    # both, naming the same variants (in any order): the --variants order is kept
    both = _launch("--variants", "insgd-l2,sgd", "--norms", "none,l2").config
    assert both.variants == ("insgd-l2", "sgd")
    path = tmp_path / "study.toml"
    path.write_text('norms = "none,l1,l2"\nvariants = ["sgd", "insgd-l1", "insgd-l2"]\n')
    assert merge(toml=load_toml(path)).config == merge().config
    # a preset's norms (`study.presets` may spell it either way)
    assert merge(preset={"norms": ["l1"]}).config.variants == ("insgd-l1",)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            {"flags": {"variants": ("sgd", "insgd-l2-frozen"), "norms": ("none", "l2")}},
            "--variants sgd,insgd-l2-frozen contradicts --norms none,l2 "
            "(= --variants sgd,insgd-l2); give one of them",
        ),
        (
            {"toml": {"variants": ("sgd",), "norms": ("none", "l1")}},
            "the config file: variants sgd contradicts norms none,l1",
        ),
        ({"flags": {"variants": ("sgd", "insgd-l3")}}, "--variants: unknown variant 'insgd-l3'"),
        ({"flags": {"variants": ("sgd", "l2")}}, "'l2' is a --norms name: --variants insgd-l2"),
        ({"flags": {"variants": ("sgd", "sgd")}}, "--variants lists a variant twice"),
        ({"flags": {"variants": ()}}, "--variants needs at least one of sgd, insgd-l1"),
        ({"flags": {"norms": ("none", "sgd")}}, "--norms: unknown variant 'sgd'"),
    ],
)
def test_contradicting_or_unknown_variants_are_refused(layers, message):
    with pytest.raises(UsageError) as info:
        merge(**layers)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_variant_names_every_choice():
    with pytest.raises(UsageError) as info:
        _launch("--variants", "sgd,frozen")
    assert str(info.value) == (
        "--variants: unknown variant 'frozen'; choose from sgd, insgd-l1, insgd-l2, "
        "insgd-l1-frozen, insgd-l2-frozen"
    )


def test_train_config_of_each_variant():
    config = StudyConfig(variants=VARIANTS, train={"momentum": 0.5})
    sgd = config.train_config("sgd", 0.1, 0.3, seed=2)
    assert (sgd.optimizer, sgd.lr, sgd.seed, sgd.beta) == ("sgd", 0.1, 2, None)
    for norm in ("l1", "l2"):
        insgd = config.train_config(f"insgd-{norm}", 0.1, 0.3, seed=2)
        assert (insgd.optimizer, insgd.norm, insgd.eps, insgd.beta) == ("insgd", norm, 0.3, None)
        assert insgd.effective_beta == 0.5  # TrainConfig's default: beta = momentum
        frozen = config.train_config(f"insgd-{norm}-frozen", 0.1, 0.3, seed=2)
        assert (frozen.optimizer, frozen.norm, frozen.eps) == ("insgd", norm, 0.3)
        assert frozen.beta == frozen.effective_beta == 1.0
        # everything but beta is what the INSGD variant trains
        assert {**frozen.to_dict(), "beta": None} == insgd.to_dict()
    # a [train] beta is every INSGD variant's, except the frozen ones': they force 1.0
    tuned = StudyConfig(variants=VARIANTS, train={"beta": 0.99})
    assert tuned.train_config("insgd-l2", 0.1, None, seed=0).beta == 0.99
    assert tuned.train_config("insgd-l2-frozen", 0.1, None, seed=0).beta == 1.0
    assert tuned.train_config("insgd-l2-frozen", 0.1, None, seed=0).eps == 0.01  # default eps
    # beta 1.0 for every INSGD variant would hide the control under its INSGD names
    with pytest.raises(UsageError, match=r"\[train\] beta = 1.0 is the frozen-normalizer"):
        StudyConfig(train={"beta": 1.0})


def test_grid_with_frozen_variants():
    flags = {"variants": FROZEN_STUDY, "lr_points": 2, "lr_min": 0.01, "lr_max": 1.0}
    config = merge(flags={**flags, "eps_points": 2, "eps_min": 0.001, "eps_max": 0.1}).config
    points = grid_points(config)
    assert config.grid_size == config.target_trials == len(points) == 2 * (1 + 2 * 2)
    assert config.grid_description() == "2 lrs x (1 SGD + 2 INSGD variants x 2 eps) x 1 seeds"
    assert [(p.variant, p.eps) for p in points[:5]] == [
        ("sgd", None),
        ("insgd-l2", 0.001),
        ("insgd-l2", 0.1),
        ("insgd-l2-frozen", 0.001),
        ("insgd-l2-frozen", 0.1),
    ]
    assert [p.lr for p in points] == [0.01] * 5 + [1.0] * 5  # lr-major
    assert merge(flags={**flags, "seeds": 3}).config.grid_size == 2 * 3 * 3
    with pytest.raises(UsageError, match=r"--trials 6 contradicts the grid, which has 12"):
        merge(flags={**flags, "seeds": 2, "sampler": "grid", "trials": 6})


def test_space_has_a_variant_parameter_and_eps_for_insgd_variants_only():
    config = merge(flags={"variants": VARIANTS, "trials": 40, "sampler": "random"}).config
    study = optuna.create_study(sampler=make_sampler(config), direction="maximize")
    space = define_space(config)
    for _ in range(40):
        trial = study.ask()
        assert space(trial) == trial.params
        study.tell(trial, 0.5)
    for trial in study.trials:
        variant = trial.params["variant"]
        assert set(trial.params) == (
            {"variant", "lr", "eps"} if variant != "sgd" else {"variant", "lr"}
        )
        assert trial.distributions["variant"] == optuna.distributions.CategoricalDistribution(
            VARIANTS
        )
        assert Point.from_params(trial.params).variant == variant
    assert {t.params["variant"] for t in study.trials} == set(VARIANTS)


def test_points_read_the_norm_parameter_of_studies_launched_before_variants():
    assert Point.from_params({"norm": "none", "lr": 0.1}) == Point("sgd", 0.1)
    assert Point.from_params({"norm": "none", "lr": 0.1, "eps": 0.5}) == Point("sgd", 0.1)
    assert Point.from_params({"norm": "l1", "lr": 0.2, "eps": 0.01}) == Point("insgd-l1", 0.2, 0.01)
    assert Point.from_params({"norm": "l2", "lr": 0.2}) == Point("insgd-l2", 0.2)
    with pytest.raises(ValueError, match="unknown norm parameter 'l3'"):
        Point.from_params({"norm": "l3", "lr": 0.2})
    for point in (Point("sgd", 0.5), Point("insgd-l2-frozen", 0.5, 0.02)):
        assert Point.from_params(point.params) == point
        assert "norm" not in point.params


def _row(variant=None, optimizer=None, norm=None, beta=None, lr=0.1, eps=0.01, acc=0.5, n=0):
    return SimpleNamespace(
        trial_number=n,
        state="COMPLETE",
        variant=variant,
        optimizer=optimizer,
        norm=norm,
        beta=beta,
        lr=lr,
        eps=eps,
        seed=0,
        final_val_accuracy=acc,
        diverged=False,
        epochs_completed=1,
    )


def test_rows_give_their_variant_column_else_optimizer_norm_and_beta():
    assert row_point(_row("insgd-l2-frozen", "insgd", "l2", 1.0)) == Point(
        "insgd-l2-frozen", 0.1, 0.01
    )
    assert row_point(_row("sgd", "sgd", "none")) == Point("sgd", 0.1)  # eps dropped
    # rows written before the variant column (or not backfilled): what they trained
    assert row_variant(_row(None, "insgd", "l2", 1.0)) == "insgd-l2-frozen"
    assert row_variant(_row(None, "insgd", "l1", None)) == "insgd-l1"
    assert row_variant(_row(None, "sgd", "none", None)) == "sgd"
    assert row_variant(SimpleNamespace(norm="l2")) == "insgd-l2"  # as the oldest tests' rows


def test_the_frozen_control_is_its_own_variant_in_the_summary_and_the_plan():
    rows = [
        _row("insgd-l2", "insgd", "l2", None, acc=0.6, n=0),
        _row("insgd-l2-frozen", "insgd", "l2", 1.0, acc=0.9, n=1),
        _row("sgd", "sgd", "none", None, eps=None, acc=0.7, n=2),
    ]
    best = best_per_variant(rows)
    assert [(b.variant, b.mean) for b in best] == [
        ("sgd", 0.7),
        ("insgd-l2", 0.6),
        ("insgd-l2-frozen", 0.9),
    ]
    assert "  insgd-l2-frozen       0.1" in summary_table(rows)
    one_lr = {"lr_points": 1, "lr_min": 0.1, "lr_max": 0.1}
    config = merge(flags={"variants": FROZEN_STUDY, **one_lr}).config
    plan = make_plan(config, rows, {})
    assert plan.finished == 3 and plan.budget == 0  # each row found its own grid point


def _old_study_dict(**flags) -> dict:
    """What a study launched before variants existed stored: `norms`, no `variants`."""
    stored = merge(flags=flags).config.study_dict()
    norm_of = {"sgd": "none", "insgd-l1": "l1", "insgd-l2": "l2"}
    stored["norms"] = [norm_of[v] for v in stored.pop("variants")]
    return json.loads(json.dumps(stored))


def test_a_stored_config_with_norms_compares_and_resumes_as_its_variants():
    stored = _old_study_dict(variants=("sgd", "insgd-l2"), epochs=2)
    assert stored["norms"] == ["none", "l2"] and "variants" not in stored
    same = merge(flags={"norms": ("none", "l2"), "epochs": 2}).config
    assert same.differences(stored) == []
    assert (
        merge(flags={"variants": ("insgd-l2", "sgd"), "epochs": 2}).config.differences(stored) == []
    )  # the same variants in another order
    other = merge(flags={"variants": FROZEN_STUDY, "epochs": 2}).config
    assert other.differences(stored) == [
        "variants: stored ['sgd', 'insgd-l2'], given ['sgd', 'insgd-l2', 'insgd-l2-frozen']"
    ]
    resumed = merge(flags={"resume": True}).resumed_from(stored)
    assert (resumed.variants, resumed.epochs) == (("sgd", "insgd-l2"), 2)
    with pytest.raises(UsageError, match="--resume continues study 'default' as stored, but"):
        merge(flags={"resume": True, "variants": FROZEN_STUDY}).resumed_from(stored)
    assert merge(flags={"resume": True, "norms": ("l2", "none")}).resumed_from(stored).variants == (
        "sgd",
        "insgd-l2",
    )


def test_an_old_study_in_the_database_is_launched_again_and_resumed(tmp_path):
    """`prepare` (what a launch checks before Ray starts) against a stored pre-variants
    study: the same study is accepted, with or without --resume; another is refused."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    flags = {"name": "old", "variants": ("sgd", "insgd-l1", "insgd-l2"), "lr_points": 2}
    writer = storage.ResultWriter(storage.open_database(url))
    writer.create_study("old", _old_study_dict(**flags), "v0")

    def prepared(**given):
        done = prepare(merge(flags=given))
        done.claim.release()  # the launch's claim on the study, which `prepare` takes
        return done

    try:
        assert prepared(**flags, storage=url).exists
        resumed = prepared(name="old", storage=url, resume=True).config
        assert (resumed.variants, resumed.lr_points) == (DEFAULT_VARIANTS, 2)
        with pytest.raises(UsageError, match="already exists with a different configuration"):
            prepared(**{**flags, "storage": url, "variants": FROZEN_STUDY})
    finally:
        storage.dispose_engines()


def test_analysis_keeps_the_frozen_control_apart_and_counts_it_as_insgd():
    from study.analysis.importance import is_insgd_trial
    from study.analysis.metrics import point_from_row, variant_name

    assert variant_name("insgd", "l2", beta=1.0) == "insgd-l2-frozen"
    assert variant_name("insgd", "l2", beta=0.9) == "insgd-l2"
    frozen = _row("insgd-l2-frozen", "insgd", "l2", 1.0)
    assert point_from_row(frozen).variant == "insgd-l2-frozen"
    assert is_insgd_trial({"variant": "insgd-l2-frozen", "lr": 0.1})
    assert not is_insgd_trial({"variant": "sgd", "lr": 0.1})
    assert is_insgd_trial({"norm": "l1", "lr": 0.1})  # a study launched before variants


def test_launch_help_documents_variants_and_the_frozen_control(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--variants VARIANTS" in text
    assert "sgd, insgd-l1, insgd-l2, insgd-l1-frozen, insgd-l2-frozen" in text
    assert "frozen after the first step (beta = 1.0)" in text
    assert "separates INSGD's adaptivity from a per-layer rescale" in text
    assert "--norms NORMS shorthand for the first three variants" in text
