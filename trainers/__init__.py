"""What one trial does: the INSGD optimizer, models, datasets and the training loop.

The public surface is small: `TrainConfig` in, `EpochMetrics` per epoch, `TrialResult` out,
and `train` between them. The dataclasses import without torch, so the command line and the
study driver can build and validate configurations cheaply; `trainers.train` (and torch
with it) is imported on first use.

`trainers.train` is both the name of the function and of its module. Python binds the
package attribute to the submodule whenever the submodule is imported, so instead of
fighting that, the module itself is callable: ``from trainers import train; train(config)``,
``trainers.train.train(config)`` and ``from trainers.train import train`` all call the same
function, whatever was imported first.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainers.config import EpochMetrics, TrainConfig, TrialResult

__all__ = ["EpochMetrics", "TrainConfig", "TrialResult", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        return importlib.import_module("trainers.train")
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")
