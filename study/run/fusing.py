"""How many trials a study fuses per Ray Tune trial (``--fuse K|auto``), and whether it
may: light enough for `study.run.runner.prepare` (no Ray), the bundles themselves are
`study.run.bundle`. The auto rule and its measurements: docs/studies.md, docs/performance.md.
"""

from __future__ import annotations

import math

from study.config import StudyConfig
from study.errors import UsageError

#: Under ``--fuse auto`` on the CPU (no GPU per trial): the largest bundle per model, where
#: fusing measured faster than the same trials one after another (docs/performance.md:
#: the digits MLP gains up to K 16 and little beyond); a model not listed trains unfused
#: on the CPU (fused conv nets measured slower).
AUTO_CPU_MEMBERS: dict[str, int] = {"mlp": 16}
#: ... and only on inputs this small (values per image): the fused MLP's batched first
#: layer measured 1.4-1.9x on digits (64), 1.0-1.1x on MNIST (784) before the per-trial
#: savings, and 0.6-0.9x on 3x32x32 (3,072), where one member's product already keeps a
#: core busy.
AUTO_CPU_MAX_INPUT = 1024
#: Values per image of the datasets whose size does not depend on options.
INPUT_SIZES: dict[str, int] = {"digits": 64, "mnist5k": 784, "cifar10": 3072, "cifar100": 3072}
#: Under ``--fuse auto`` with a GPU per trial: the largest bundle per model. Small models
#: leave most of a GPU idle; a bundle's activations grow with K, so CIFAR ResNet-20 gets
#: fewer members and the large models (ImageNet ResNets, wide ResNets: one member may
#: fill a GPU) none. Not measured yet (no GPU was available, docs/performance.md).
AUTO_GPU_MEMBERS: dict[str, int] = {"mlp": 32, "mnist-toy": 32, "toy-cnn": 32, "resnet20": 8}
#: Under ``--fuse auto`` with TPE: at least this many waves of bundles. TPE learns from
#: told trials only, and a bundle's configurations are asked before any of them is told
#: (constant liar), so one wave of large bundles would be a random search; four waves
#: leave three rounds of feedback (a 60-trial study on 2 slots: bundles of 8, not 15).
TPE_MIN_WAVES = 4


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
    - on the CPU: up to `AUTO_CPU_MEMBERS[model]`, on inputs of at most
      `AUTO_CPU_MAX_INPUT` values (`input_size`);
    - with TPE, also small enough for `TPE_MIN_WAVES` waves of bundles;

    (1 for models not listed), and within that cap the *balanced* size: the fewest waves
    of bundles (one bundle per slot at a time) that hold every pending trial, and then the
    smallest K that fills those waves. A study's wall time is its waves times a bundle's
    time, so 21 trials on 2 slots with a cap of 16 run as bundles of 11 and 10 in one wave
    (not 16 and 5: one slot idle half the time), and with a cap of 8 as 6, 6, 6, 3 in two
    waves (not 8, 8, 5: a third bundle alone in the second wave runs 8 + 5 member-trials
    back to back on one slot, where 6 + 6 suffice).
    """
    if config.fuse != "auto":
        return int(config.fuse)
    if fuse_reason(config) is not None:
        return 1
    if config.gpus_per_trial > 0:
        cap = AUTO_GPU_MEMBERS.get(config.model, 1)
    else:
        size = input_size(config)
        small = size is not None and size <= AUTO_CPU_MAX_INPUT
        cap = AUTO_CPU_MEMBERS.get(config.model, 1) if small else 1
    if config.sampler == "tpe":
        cap = min(cap, math.ceil(max(1, pending) / (TPE_MIN_WAVES * max(1, slots))))
    return balanced_size(pending, slots, cap)


def input_size(config: StudyConfig) -> int | None:
    """Values per image of the study's dataset (C*H*W); None where unknown (ImageNet's
    crops are large anyway)."""
    if config.dataset == "synthetic":
        options = config.train.get("dataset_options") or {}
        shape = options.get("shape", (3, 32, 32))  # the synthetic loader's default
        return math.prod(int(n) for n in shape)
    return INPUT_SIZES.get(config.dataset)


def balanced_size(pending: int, slots: int, cap: int) -> int:
    """The bundle size for `pending` trials on `slots` parallel slots, at most `cap`:
    ceil(pending / (slots * waves)) with waves = ceil(pending / (slots * cap))."""
    pending, slots, cap = max(1, pending), max(1, slots), max(1, cap)
    waves = math.ceil(pending / (slots * cap))
    return max(1, min(cap, math.ceil(pending / (slots * waves))))
