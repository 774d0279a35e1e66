"""What one trial is: the configuration `train()` takes and the results it hands back.

These dataclasses are the only contract between `trainers/` and its callers
(`study/`, tests, a person at a GPU box). They are plain data so they pickle
into Ray workers and serialize to JSON for the results database.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OPTIMIZERS = ("sgd", "insgd")
NORMS = ("l1", "l2")
NORMALIZERS = ("log", "nlms")
GRANULARITIES = ("layer", "channel")
SCHEDULES = ("constant", "multistep", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one training run.

    `beta=None` means "equal to momentum", the paper's choice. `beta=1.0` is the
    frozen-normalizer control (INSGD only): P stays P_1, the input energy of each
    layer's first step, so each layer's learning rate is rescaled once at
    initialization and never adapts; it tells how much of INSGD's effect is that
    rescale rather than tracking the input energy. `amp` and `channels_last`
    default to on for CUDA and off for CPU (`None` = auto).
    """

    dataset: str = "digits"
    model: str = "mlp"
    data_dir: str | None = None
    download: bool = False
    optimizer: str = "insgd"
    norm: str = "l2"
    normalizer: str = "log"
    granularity: str = "layer"
    eps: float = 0.01
    beta: float | None = None
    lr: float = 0.1
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "constant"
    warmup_epochs: int = 0
    batch_size: int = 128
    epochs: int = 5
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    batchnorm: bool = True
    augment: bool | None = None
    val_fraction: float = 0.1
    divergence_factor: float = 10.0
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad value; train() never starts on bad input."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("norm", self.norm, NORMS)
        _choice("normalizer", self.normalizer, NORMALIZERS)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("schedule", self.schedule, SCHEDULES)
        _positive("lr", self.lr)
        _positive("eps", self.eps)
        _positive("divergence_factor", self.divergence_factor)
        for name in ("momentum", "dampening"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0 or (name == "dampening" and value == 1.0)):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        # 1.0 is allowed: the frozen-normalizer control (see the class docstring).
        if self.beta is not None and not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1] or None, got {self.beta!r}")
        if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")

    @property
    def effective_beta(self) -> float:
        return self.momentum if self.beta is None else self.beta

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class EpochMetrics:
    """What `on_epoch` receives after every epoch (accuracies are fractions in [0, 1])."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    epoch_seconds: float
    images_per_second: float
    diverged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialResult:
    """The outcome of one `train()` call; divergence is a result, not an exception."""

    config: TrainConfig
    epochs: list[EpochMetrics]
    final_val_accuracy: float
    best_val_accuracy: float
    final_train_loss: float
    diverged: bool
    epochs_completed: int
    wall_seconds: float
    device_name: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
