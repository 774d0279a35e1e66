"""A trial's TrainConfig from the study's templates and its Tune config (`study.run.trial_config`),
and the trainable that carries the templates to the workers (`study.run.trainable.bind`)."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import pytest
from ray import cloudpickle

from study.config import VARIANTS, StudyConfig
from study.run.trainable import bind, run_trial
from study.run.trial_config import TrialTemplates

CALLS: list[tuple[dict[str, Any], TrialTemplates]] = []


def _recording_trial(config: dict[str, Any], templates: TrialTemplates) -> None:
    CALLS.append((config, templates))


STUDY = StudyConfig(
    dataset="digits",
    model="toy-cnn",
    epochs=3,
    batch_size=32,
    train={"momentum": 0.5, "weight_decay": 0.0, "model_options": {"width": 8}},
)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("eps", [0.003, None])
def test_options_are_exactly_what_the_study_config_builds(variant, eps) -> None:
    study = replace(STUDY, variants=VARIANTS)
    templates = TrialTemplates.for_study(study)
    assert set(templates.by_variant) == set(VARIANTS)
    trial = {"trial_number": 4, "variant": variant, "lr": 0.25, "eps": eps, "seed": 3}
    expected = study.train_config(variant, 0.25, eps, 3).to_dict()
    assert templates.options(trial) == expected
    assert templates.options(trial, "cuda") == {**expected, "device": "cuda"}
    assert templates.train_config(trial, "cpu") == study.train_config(variant, 0.25, eps, 3, "cpu")
    assert expected["beta"] == (1.0 if variant.endswith("-frozen") else None)


def test_templates_are_the_studys_variants_only() -> None:
    templates = TrialTemplates.for_study(replace(STUDY, variants=("insgd-l2",)))
    assert set(templates.by_variant) == {"insgd-l2"}
    with pytest.raises(KeyError):
        templates.options({"variant": "sgd", "lr": 0.1, "eps": None, "seed": 0})


def test_options_are_a_new_dict_each_call_with_nested_dicts_copied() -> None:
    templates = TrialTemplates.for_study(STUDY)
    trial = {"variant": "insgd-l1", "lr": 0.1, "eps": 0.01, "seed": 0}
    first = templates.options(trial)
    first["model_options"]["width"] = 999
    first["momentum"] = 0.0
    assert templates.options(trial)["model_options"] == {"width": 8}
    assert templates.options(trial)["momentum"] == 0.5


def test_a_template_trial_config_is_validated_like_any_other() -> None:
    templates = TrialTemplates.for_study(STUDY)
    with pytest.raises(ValueError, match="lr"):
        templates.train_config({"variant": "insgd-l2", "lr": -1.0, "eps": 0.01, "seed": 0})


def test_bind_passes_the_templates_and_survives_the_pickling_ray_does() -> None:
    templates = TrialTemplates.for_study(STUDY)
    bound = bind(_recording_trial, templates)
    assert bound.__name__ == "run_trial"  # Tune names trials after it
    CALLS.clear()
    cloudpickle.loads(cloudpickle.dumps(bound))({"variant": "sgd", "lr": 1.0, "seed": 0})
    ((config, got),) = CALLS
    assert config == {"variant": "sgd", "lr": 1.0, "seed": 0}
    assert got == templates and got is not templates  # a copy travelled with the function
    # the study's own trainable pickles too, the function by reference, not by value
    assert pickle.loads(pickle.dumps(run_trial)) is run_trial
    assert len(cloudpickle.dumps(bind(run_trial, templates))) < 10_000
