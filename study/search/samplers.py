"""The Optuna sampler behind each ``--sampler`` name.

- ``tpe``: multivariate TPE with ``group=True``, which models the SGD and INSGD
  sub-spaces (with and without the conditional eps) separately instead of falling back to
  independent sampling; ``constant_liar`` keeps parallel workers from piling onto one
  promising point.
- ``random``: uniform over the space (log-uniform for lr and eps).
- ``qmc``: scrambled Sobol; covers the (variant, lr, eps) box more evenly than random for the
  same budget. Its space is fixed by the first trial, so a conditional eps the first trial
  lacked is sampled independently (at random) afterwards.
- ``grid``: every point is enqueued with its fixed parameters (see `study.search.searcher`), so the
  sampler only has to exist; a seeded RandomSampler is the cheapest that does.
"""

from __future__ import annotations

import warnings

import optuna

from study.config import StudyConfig


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    seed = config.sampler_seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
        if config.sampler == "qmc":
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed,
                warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
        if config.sampler in ("random", "grid"):
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {config.sampler!r}")  # validated earlier
