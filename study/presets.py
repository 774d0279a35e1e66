"""Named study presets for ``insgd-study launch --preset NAME``.

A preset is a table of `StudyConfig` keys (the same keys a study TOML file takes) applied
on top of the defaults and below the TOML file and the flags. `default` is the default
study itself (what `make demo` runs), spelled out so that it is visible and can be named.
Paper-reproduction presets are added here by the analysis (issue 5).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "dataset": "digits",
        "model": "mlp",
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 1e-3,
        "lr_max": 10.0,
        "lr_points": 7,
        "eps_points": 1,
        "seeds": 1,
    },
    # ---- the paper's experiments (shared/INSGD.md). Each sets its study name, so
    # `insgd-study report --study paper-...` finds it; --name and other flags override.
    # The CIFAR setup: batch 128, momentum 0.9, weight decay 5e-4, lr x0.2 at 40/60/80%
    # of the epochs (80/120/160 of 200), crop+flip augmentation, 3 seeds.
    "paper-mnist": {
        # The MNIST toy net (no BN) on the bundled MNIST-5k: the lr-robustness comparison in
        # a few minutes on a CPU (30 trials x 3 epochs). 0.316 and 1.0 are the "too high" lrs.
        "name": "paper-mnist",
        "dataset": "mnist5k",
        "model": "mnist-toy",
        "epochs": 3,
        "batch_size": 128,
        "train": {"batchnorm": False, "momentum": 0.9, "weight_decay": 5e-4},
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 0.01,
        "lr_max": 1.0,
        "lr_points": 5,
        "eps_points": 1,
        "seeds": 2,
    },
    "paper-toy": {
        # The toy CNN with BN on CIFAR-10 (needs the data in --data-dir): lr 0.01, 0.1 and
        # beyond (0.316 stands for the paper's 0.25, 1.0 for "far too high").
        "name": "paper-toy",
        "dataset": "cifar10",
        "model": "toy-cnn",
        "epochs": 200,
        "batch_size": 128,
        "train": {
            "batchnorm": True,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "multistep",
            "augment": True,
        },
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 0.01,
        "lr_max": 1.0,
        "lr_points": 5,
        "eps_points": 1,
        "seeds": 3,
    },
    "paper-toy-nobn": {
        # The same toy CNN without BatchNorm: where the paper finds INSGD's biggest gain.
        # BN is a study-level setting, so the paper's "with and without BN" is two studies.
        "name": "paper-toy-nobn",
        "dataset": "cifar10",
        "model": "toy-cnn",
        "epochs": 200,
        "batch_size": 128,
        "train": {
            "batchnorm": False,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "multistep",
            "augment": True,
        },
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 0.01,
        "lr_max": 1.0,
        "lr_points": 5,
        "eps_points": 1,
        "seeds": 3,
    },
    "paper-resnet20": {
        "name": "paper-resnet20",
        "dataset": "cifar10",
        "model": "resnet20",
        "epochs": 200,
        "batch_size": 128,
        "train": {
            "batchnorm": True,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "multistep",
            "augment": True,
        },
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 0.01,
        "lr_max": 1.0,
        "lr_points": 5,
        "eps_points": 1,
        "seeds": 3,
        "gpus_per_trial": 1.0,
    },
    "paper-wrn-cifar100": {
        # The paper's "WResNet-18" has no WRN-D-W equivalent (D = 6n+4); WRN-16-8 is the
        # nearest standard wide ResNet of that size.
        "name": "paper-wrn-cifar100",
        "dataset": "cifar100",
        "model": "wrn-16-8",
        "epochs": 200,
        "batch_size": 128,
        "train": {
            "batchnorm": True,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "multistep",
            "augment": True,
        },
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 0.01,
        "lr_max": 1.0,
        "lr_points": 3,
        "eps_points": 1,
        "seeds": 3,
        "gpus_per_trial": 1.0,
    },
    "paper-resnet50-imagenet": {
        # 90 epochs (the paper); batch 256 and weight decay 1e-4 are the standard ImageNet
        # ResNet-50 recipe (INSGD.md gives no other), with the multistep schedule.
        "name": "paper-resnet50-imagenet",
        "dataset": "imagenet",
        "model": "resnet50",
        "epochs": 90,
        "batch_size": 256,
        "train": {
            "batchnorm": True,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "multistep",
            "augment": True,
        },
        "sampler": "grid",
        "norms": ["none", "l1", "l2"],
        "lr_min": 0.01,
        "lr_max": 1.0,
        "lr_points": 3,
        "eps_points": 1,
        "seeds": 3,
        "gpus_per_trial": 1.0,
    },
}
