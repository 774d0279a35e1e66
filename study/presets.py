"""Named study presets for ``insgd-study launch --preset NAME``.

A preset is a table of `StudyConfig` keys (the same keys a study TOML file takes) applied
on top of the defaults and below the TOML file and the flags. `default` is the default
study itself (what `make demo` runs), spelled out so that it is visible and can be named.
Paper-reproduction presets are added here by the analysis (issue 5).
"""

from __future__ import annotations

from typing import Any

# What every paper experiment shares: SGD vs INSGD-l1/l2 on a log grid of lrs from 0.01 to 1.
_PAPER_GRID: dict[str, Any] = {
    "sampler": "grid",
    "variants": ["sgd", "insgd-l1", "insgd-l2"],
    "lr_min": 0.01,
    "lr_max": 1.0,
    "eps_points": 1,
}


def _paper_cifar(**overrides: Any) -> dict[str, Any]:
    """The paper's CIFAR setup: 200 epochs, batch 128, momentum 0.9, weight decay 5e-4,
    lr x0.2 at 40/60/80% of the epochs (80/120/160 of 200), crop+flip augmentation,
    5 lrs (0.316 stands for the paper's 0.25, 1.0 for "far too high"), 3 seeds."""
    train = {
        "batchnorm": True,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "multistep",
        "augment": True,
    }
    train.update(overrides.pop("train", {}))
    preset = {
        **_PAPER_GRID,
        "dataset": "cifar10",
        "epochs": 200,
        "batch_size": 128,
        "train": train,
        "lr_points": 5,
        "seeds": 3,
    }
    preset.update(overrides)
    return preset


PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "dataset": "digits",
        "model": "mlp",
        "sampler": "grid",
        "variants": ["sgd", "insgd-l1", "insgd-l2"],
        "lr_min": 1e-3,
        "lr_max": 10.0,
        "lr_points": 7,
        "eps_points": 1,
        "seeds": 1,
    },
    # ---- the paper's experiments (docs/insgd.md). Each sets its study name, so
    # `insgd-study report --study paper-...` finds it; --name and other flags override.
    "paper-mnist": {
        # The MNIST toy net (no BN) on the bundled MNIST-5k, dense enough to decide: SGD,
        # INSGD-l1/l2 and INSGD-l2's frozen-normalizer control (which separates adaptivity
        # from a per-layer rescale) x 15 lrs at quarter decades from 0.001 to 3.16 x 4 seeds
        # = 240 trials x 3 epochs (docs/studies.md states how long it takes on a CPU).
        **_PAPER_GRID,
        "name": "paper-mnist",
        "dataset": "mnist5k",
        "model": "mnist-toy",
        "epochs": 3,
        "batch_size": 128,
        "train": {"batchnorm": False, "momentum": 0.9, "weight_decay": 5e-4},
        "variants": ["sgd", "insgd-l1", "insgd-l2", "insgd-l2-frozen"],
        "lr_min": 1e-3,
        "lr_max": 10**0.5,
        "lr_points": 15,
        "seeds": 4,
    },
    # The toy CNN with BN on CIFAR-10 (needs the data in --data-dir).
    # A GPU per Ray trial: under --fuse auto a Ray trial is a bundle of up to 32 of the
    # 45 toy CNNs, which fills one GPU where a single toy CNN leaves it mostly idle
    # (without a GPU, 200 CIFAR-10 epochs per trial are out of reach anyway).
    "paper-toy": _paper_cifar(name="paper-toy", model="toy-cnn", gpus_per_trial=1.0),
    # The same toy CNN without BatchNorm: where the paper finds INSGD's biggest gain.
    # BN is a study-level setting, so the paper's "with and without BN" is two studies.
    "paper-toy-nobn": _paper_cifar(
        name="paper-toy-nobn", model="toy-cnn", train={"batchnorm": False}, gpus_per_trial=1.0
    ),
    "paper-resnet20": _paper_cifar(name="paper-resnet20", model="resnet20", gpus_per_trial=1.0),
    # The paper's "WResNet-18" has no WRN-D-W equivalent (D = 6n+4); WRN-16-8 is the
    # nearest standard wide ResNet of that size.
    "paper-wrn-cifar100": _paper_cifar(
        name="paper-wrn-cifar100",
        dataset="cifar100",
        model="wrn-16-8",
        lr_points=3,
        gpus_per_trial=1.0,
    ),
    # 90 epochs (the paper); batch 256 and weight decay 1e-4 are the standard ImageNet
    # ResNet-50 recipe (docs/insgd.md gives no other), with the multistep schedule.
    "paper-resnet50-imagenet": _paper_cifar(
        name="paper-resnet50-imagenet",
        dataset="imagenet",
        model="resnet50",
        epochs=90,
        batch_size=256,
        train={"weight_decay": 1e-4},
        lr_points=3,
        gpus_per_trial=1.0,
    ),
}
