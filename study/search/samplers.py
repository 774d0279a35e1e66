"""The Optuna sampler behind each ``--sampler`` name.

- ``tpe``: multivariate TPE with ``group=True``, which models the SGD and INSGD
  sub-spaces (with and without the conditional eps) separately instead of falling back to
  independent sampling; ``constant_liar`` counts every RUNNING trial among the bad ones,
  which keeps trials asked before the earlier ones are told from piling onto one
  promising point: parallel trials, and the configurations of a fused bundle
  (``--fuse K``: asked back to back, before any of them is told; `study.run.bundle`).
- ``random``: uniform over the space (log-uniform for lr and eps).
- ``qmc``: scrambled Sobol; covers the (variant, lr, eps) box more evenly than random for the
  same budget. Its space is fixed by the first trial, so a conditional eps the first trial
  lacked is sampled independently (at random) afterwards.
- ``grid``: every point is enqueued with its fixed parameters (see `study.search.searcher`), so the
  sampler only has to exist; a seeded RandomSampler is the cheapest that does.

A seeded sampler is made anew by every launch of a study. Seeded as the first launch
was, a resumed study would draw the same random numbers again and replay the first
launch's configurations (random, and TPE's random start-up trials; QMC's norm and eps,
which its independent sampler draws). So the random draws of a study that already has
trials are seeded from (seed, how many Optuna trials it has): the same seed still gives
the same study, launch after launch, and no launch repeats another's draws. QMC's Sobol
sequence itself keeps its seed: it goes on from its last point (stored in the study).
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna

from study.config import StudyConfig


def make_sampler(config: StudyConfig, asked: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, for a study that already has `asked` Optuna trials (0: new)."""
    seed = config.sampler_seed
    draws = continued_seed(seed, asked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=draws, multivariate=True, group=True, constant_liar=True
            )
        if config.sampler == "qmc":
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed,
                independent_sampler=optuna.samplers.RandomSampler(seed=draws),
                warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
        if config.sampler in ("random", "grid"):
            return optuna.samplers.RandomSampler(seed=draws)
    raise ValueError(f"unknown sampler {config.sampler!r}")  # validated earlier


def continued_seed(seed: int | None, asked: int) -> int | None:
    """The seed of the random draws of a study that already has `asked` Optuna trials:
    `seed` itself for a new study (as always), else one derived from (seed, asked)."""
    if seed is None or asked <= 0:
        return seed
    return int(np.random.SeedSequence([seed, asked]).generate_state(1)[0])


def optuna_trial_count(storage: optuna.storages.BaseStorage, name: str) -> int:
    """How many trials (any state) Optuna's study `name` has; 0 if it does not exist."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))
