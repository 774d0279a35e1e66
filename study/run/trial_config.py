"""What one trial trains: its study's fixed training options plus its own lr, eps and seed.

Ray Tune handles a trial's whole config on its event loop, between one trial and the
next: it deep-copies it when it creates the trial, flattens and formats every entry into
the trial's name, and flattens it again into every result. A complete `TrainConfig` there
is ~30 entries where only the variant, lr, eps and seed vary from trial to trial: handling
them cost the driver ~0.2 ms a trial more than the trial's own values do
(docs/performance.md), CPU that a 2-core machine takes from the trials.
So the Tune config of a study's trial holds only the trial's own values
(`SeededSearch.suggest`), and everything else, the same for every trial of a variant, is a
`TrialTemplates` built once per launch. It travels with the trainable (pickled once with
it, `study.run.trainable.bind`) and is merged back where a complete config is needed: on the
worker, which trains it, and in the driver, whose results row stores it
(`study.run.recorder`). `options` gives exactly what `StudyConfig.train_config` gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from study.config import StudyConfig, is_insgd_variant
from trainers.config import TrainConfig


@dataclass(frozen=True)
class TrialTemplates:
    """Per variant of the study ("sgd", "insgd-l2", "insgd-l2-frozen", ...), the
    `TrainConfig.to_dict()` of its trials of that variant, their lr, eps and seed left to
    each trial."""

    by_variant: Mapping[str, Mapping[str, Any]]

    @classmethod
    def for_study(cls, config: StudyConfig) -> TrialTemplates:
        """The templates of the study's variants (every configuration it runs, resumed
        ones too, is one of them: `study.run.runner.make_plan`); the lr and seed written
        here are placeholders that `options` replaces."""
        return cls(
            {
                variant: config.train_config(variant, lr=1.0, eps=None, seed=0).to_dict()
                for variant in config.variants
            }
        )

    def options(self, trial: Mapping[str, Any], device: str | None = None) -> dict[str, Any]:
        """The complete training options of a trial whose Tune config is `trial` (its
        variant, lr, eps and seed), on `device` if given: `StudyConfig.train_config`'s dict.

        A new dict each call, its dict-valued options (`model_options`,
        `dataset_options`) copied too, so that nothing done to one trial's options
        reaches the template or another trial's."""
        variant = trial["variant"]
        options = {
            key: dict(value) if isinstance(value, dict) else value
            for key, value in self.by_variant[variant].items()
        }
        options["lr"] = float(trial["lr"])
        options["seed"] = int(trial["seed"])
        if is_insgd_variant(variant) and trial.get("eps") is not None:
            options["eps"] = float(trial["eps"])  # SGD keeps TrainConfig's, as train_config
        if device is not None:
            options["device"] = device
        return options

    def train_config(self, trial: Mapping[str, Any], device: str | None = None) -> TrainConfig:
        """The validated `TrainConfig` of that trial."""
        return TrainConfig.from_dict(self.options(trial, device))
