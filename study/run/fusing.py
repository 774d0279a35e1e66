"""How many trials a study fuses per Ray Tune trial (``--fuse K|auto``), and whether it
may: light enough for `study.run.runner.prepare` (no Ray), the bundles themselves are
`study.run.bundle`. The auto rule and its measurements: docs/studies.md, docs/performance.md.
"""

from __future__ import annotations

import math

from study.config import StudyConfig
from study.errors import UsageError

#: Under ``--fuse auto`` on the CPU (no GPU per trial): the largest bundle per model, where
#: fusing measured faster than the same trials one after another (docs/performance.md);
#: a model not listed trains unfused on the CPU (fused conv nets measured slower).
AUTO_CPU_MEMBERS: dict[str, int] = {"mlp": 8}
#: Under ``--fuse auto`` with a GPU per trial: the largest bundle per model. Small models
#: leave most of a GPU idle; a bundle's activations grow with K, so CIFAR ResNet-20 gets
#: fewer members and the large models (ImageNet ResNets, wide ResNets: one member may
#: fill a GPU) none. Not measured yet (no GPU was available, docs/performance.md).
AUTO_GPU_MEMBERS: dict[str, int] = {"mlp": 32, "mnist-toy": 32, "toy-cnn": 32, "resnet20": 8}


def fuse_reason(config: StudyConfig) -> str | None:
    """None when the study's trials can fuse, else why not (one line): its variants'
    trial configurations must fuse (`trainers.fused.can_fuse`) and the scheduler must be
    FIFO. The sampler does not matter: grid, random and qmc take the next K
    configurations, TPE asks K at once (constant liar: `study.run.bundle`)."""
    if config.scheduler != "fifo":
        return f"--scheduler {config.scheduler} stops single members of a bundle"
    from trainers.fused import can_fuse

    configs = [
        config.train_config(variant, lr=config.lr_min, eps=config.eps_min, seed=seed)
        for variant in config.variants
        for seed in range(min(config.seeds, 2))
    ]
    return can_fuse(configs)


def check_fuse(config: StudyConfig) -> None:
    """An explicit ``--fuse K`` > 1 for trials that cannot fuse is a UsageError (one line);
    ``auto`` falls back to unfused trials instead."""
    if config.fuse == "auto" or int(config.fuse) == 1:
        return
    reason = fuse_reason(config)
    if reason is not None:
        raise UsageError(
            f"--fuse {config.fuse}: these trials cannot train fused ({reason}); use --fuse 1 "
            f"or --fuse auto"
        )


def fuse_size(config: StudyConfig, pending: int, slots: int) -> int:
    """The bundle size K of this launch: ``--fuse K`` as given, or under ``auto``:

    - 1 where the trials cannot fuse (`fuse_reason`);
    - with a GPU per trial (``--gpus-per-trial`` > 0): up to `AUTO_GPU_MEMBERS[model]`;
    - on the CPU: up to `AUTO_CPU_MEMBERS[model]`;

    (1 for models not listed)

    never more than it takes to give every slot a bundle: ceil(pending / slots).
    """
    if config.fuse != "auto":
        return int(config.fuse)
    if fuse_reason(config) is not None:
        return 1
    caps = AUTO_GPU_MEMBERS if config.gpus_per_trial > 0 else AUTO_CPU_MEMBERS
    cap = caps.get(config.model, 1)
    return max(1, min(cap, math.ceil(max(1, pending) / max(1, slots))))
