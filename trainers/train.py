"""One trial: train one `TrainConfig`, report every epoch, return a `TrialResult`.

The same call runs in a unit test, in a Ray worker and by hand on a GPU box; it knows
nothing of Ray or Optuna. Design choices, and why:

- **No host sync per batch.** Loss and correct counts accumulate as device tensors and are
  read once per epoch; a Python float per batch would stall the GPU queue every step.
  On CUDA a non-finite running loss is still noticed mid-epoch through a pinned-memory copy
  that is only read once its event has completed (`_NonFiniteWatch`), so it costs no sync.
- **Divergence is a result.** An epoch whose mean train loss is non-finite, or above
  ``divergence_factor * ln(num_classes)``, or whose validation loss is non-finite, ends the
  trial with ``diverged=True``. ln(C) is the loss of a uniform guess, about what an
  untrained network scores; unlike a first-epoch reference it is known before the first
  step, so a trial that blows up in epoch 1 is judged as well. The diverged epoch is
  evaluated like any other if the weights are finite; with non-finite weights or buffers its
  val loss is NaN and its val accuracy 0. Predictions from non-finite logits never count as
  correct. A diverged trial's ``final_val_accuracy`` is that diverged epoch's accuracy
  (not the last good epoch's): what the trial ended with. The analysis counts diverged
  trials as 0 anyway.
- **Reproducible on CPU.** torch is seeded with ``config.seed`` (model init, dropout) and the
  data order comes from a `torch.Generator` on the data's device seeded the same way; with
  a checkpoint every one of those streams is restored (see `trainers.checkpoint`). CUDA
  runs use cuDNN autotuning and bf16, so they are fast rather than bit-reproducible.
"""

from __future__ import annotations

import math
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.checkpoint import (
    capture_rng,
    check_writable,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from trainers.config import EpochMetrics, TrainConfig, TrialResult
from trainers.device import device_name, resolve_device, use_amp, use_channels_last
from trainers.schedules import schedule_factor, warmup_factor

__all__ = ["EpochRunner", "build_optimizer", "resolve_device", "setup_trial", "train"]

EpochCallback = Callable[[EpochMetrics], Any]


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """`torch.optim.SGD` or INSGD with the config's hyperparameters (beta=None -> momentum).

    Both use the multi-tensor (foreach) update so that a speed comparison between them
    compares the algorithms, not two implementations of the loop over parameters.
    """
    common = {
        "momentum": config.momentum,
        "dampening": config.dampening,
        "nesterov": config.nesterov,
        "weight_decay": config.weight_decay,
        "foreach": True,
    }
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, **common)
    from trainers.insgd import INSGD

    return INSGD(
        model,
        config.lr,
        norm=config.norm,
        eps=config.eps,
        beta=config.effective_beta,
        granularity=config.granularity,
        normalizer=config.normalizer,
        **common,
    )


def is_last_epoch(config: TrainConfig, metrics: EpochMetrics) -> bool:
    """Whether `metrics` is the trial's last epoch: its final one, or the one it diverged
    in (training stops there). Nothing resumes from it, so it needs no checkpoint."""
    return metrics.epoch >= config.epochs or metrics.diverged


def train(
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    checkpoint_last: bool = True,
) -> TrialResult:
    """Train `config` for `config.epochs` epochs (or until it diverges).

    `on_epoch(metrics)` runs after every epoch, after that epoch's checkpoint is written to
    `checkpoint_path` (if given). `resume_from` continues a trial from such a checkpoint.
    `checkpoint_last=False` skips the checkpoint of the trial's last epoch (its final or
    diverged one), for a caller that never resumes a finished trial (a Tune trial).
    Bad input (unknown dataset/model, missing data, unusable device, a checkpoint for
    another configuration) raises ValueError / FileNotFoundError before any training.
    """
    config.validate()
    started = time.perf_counter()
    device = resolve_device(config)
    resumed = load_checkpoint(resume_from, config, device) if resume_from is not None else None
    if checkpoint_path is not None:
        check_writable(checkpoint_path)

    runner = setup_trial(config, device)
    history: list[EpochMetrics] = []
    prior_seconds = 0.0
    try:
        if resumed is not None:
            runner.model.load_state_dict(resumed["model"])
            runner.optimizer.load_state_dict(resumed["optimizer"])
            restore_rng(resumed["rng"], runner.generator, device)
            history = [EpochMetrics(**row) for row in resumed["history"]]
            prior_seconds = float(resumed["wall_seconds"])
        for epoch in range(len(history) + 1, config.epochs + 1):
            if history and history[-1].diverged:
                break
            metrics = runner.run_epoch(epoch)
            history.append(metrics)
            if checkpoint_path is not None and (
                checkpoint_last or not is_last_epoch(config, metrics)
            ):
                save_checkpoint(
                    checkpoint_path,
                    {
                        "config": config.to_dict(),
                        "epoch": epoch,
                        "model": runner.model.state_dict(),
                        "optimizer": runner.optimizer.state_dict(),
                        "rng": capture_rng(runner.generator, device),
                        "history": [row.to_dict() for row in history],
                        "wall_seconds": prior_seconds + time.perf_counter() - started,
                    },
                )
            if on_epoch is not None:
                on_epoch(metrics)
    finally:
        runner.close()

    last = history[-1]
    return TrialResult(
        config=config,
        epochs=history,
        final_val_accuracy=last.val_accuracy,
        best_val_accuracy=max(row.val_accuracy for row in history),
        final_train_loss=last.train_loss,
        diverged=last.diverged,
        epochs_completed=len(history),
        wall_seconds=prior_seconds + time.perf_counter() - started,
        device_name=device_name(device),
    )


def setup_trial(
    config: TrainConfig, device: torch.device | None = None, *, dataset: Any = None
) -> EpochRunner:
    """Everything `train()` builds before its first epoch: seeded model, optimizer, data.

    The benchmarks use it too (with their own synthetic `dataset`), so what they time is the
    training loop itself rather than a copy of it.
    """
    from trainers.data import check_dataset_name, load_dataset
    from trainers.models import build_model, check_model_name

    device = resolve_device(config) if device is None else device
    check_model_name(config.model)  # a typo fails before any data is read
    if dataset is None:
        check_dataset_name(config.dataset)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
    if dataset is None:
        dataset = load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            download=config.download,
            device=str(device),
            seed=config.seed,
            val_fraction=config.val_fraction,
            augment=config.augment,
            **config.dataset_options,
        )
    channels_last = use_channels_last(config, device)
    model = build_model(
        config.model,
        in_channels=dataset.in_channels,
        image_size=dataset.image_size,
        num_classes=dataset.num_classes,
        batchnorm=config.batchnorm,
        **config.model_options,
    )
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = build_optimizer(config, model)
    data_device = torch.device(getattr(dataset, "device", device))
    generator = torch.Generator(device=data_device).manual_seed(config.seed)
    return EpochRunner(config, model, optimizer, dataset, device, generator, channels_last)


class EpochRunner:
    """The hot loop of one epoch and its evaluation, set up once per trial."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Any,
        device: torch.device,
        generator: torch.Generator,
        channels_last: bool,
    ) -> None:
        self.config = config
        self.model = model
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(model) if config.compile else model
        )
        self.optimizer = optimizer
        self.dataset = dataset
        self.device = device
        self.generator = generator
        self.channels_last = channels_last
        self.amp = use_amp(config, device)
        counter = getattr(dataset, "steps_per_epoch", None)
        self.steps_per_epoch = max(
            1,
            counter(config.batch_size)
            if counter is not None
            else math.ceil(dataset.num_train / config.batch_size),
        )
        self.divergence_threshold = config.divergence_factor * math.log(max(2, dataset.num_classes))

    def close(self) -> None:
        """Detach INSGD's forward hooks: the model may outlive the trial (tests, notebooks)."""
        remove_hooks = getattr(self.optimizer, "remove_hooks", None)
        if remove_hooks is not None:
            remove_hooks()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward, optimizer step on a `prepare`d batch; returns the (detached)
        loss and logits. Nothing here reads a value back to the host, so on CUDA the queue
        keeps flowing.
        """
        with self.autocast():
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the training device, NHWC when channels_last is on."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def run_epoch(self, epoch: int) -> EpochMetrics:
        config = self.config
        start = time.perf_counter()
        base = config.lr * schedule_factor(
            config.schedule, epoch, config.epochs, config.warmup_epochs
        )
        warming = epoch <= config.warmup_epochs
        lr = base
        if not warming:
            self._set_lr(lr)

        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        watch = _NonFiniteWatch(self.device)
        batches = self.dataset.train_batches(config.batch_size, self.generator)
        for step, (x_batch, y_batch) in enumerate(batches):
            if warming:
                lr = base * warmup_factor(epoch, step, self.steps_per_epoch, config.warmup_epochs)
                self._set_lr(lr)
            x, y = self.prepare(x_batch, y_batch)
            loss, logits = self.train_step(x, y)
            count = y.shape[0]
            loss_sum.add_(loss.float(), alpha=count)
            correct.add_((logits.argmax(dim=1) == y).sum())
            seen += count
            if watch.tripped(step, loss_sum):
                break
        if seen == 0:
            raise ValueError(f"dataset {config.dataset!r} yielded no training batches")
        train_loss_sum, train_correct = torch.stack(
            [loss_sum, correct.to(torch.float32)]
        ).tolist()  # the epoch's one host sync for the training pass
        train_seconds = time.perf_counter() - start
        train_loss = train_loss_sum / seen

        val_loss, val_accuracy = self.evaluate()
        diverged = (
            not math.isfinite(train_loss)
            or train_loss > self.divergence_threshold
            or not math.isfinite(val_loss)
        )
        return EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_correct / seen,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            epoch_seconds=time.perf_counter() - start,
            images_per_second=seen / train_seconds if train_seconds > 0 else float("inf"),
            diverged=diverged,
        )

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Validation loss and accuracy; (NaN, 0.0) when the weights are no longer finite."""
        if not _all_finite(self.model.state_dict().values()):
            return float("nan"), 0.0
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for x_batch, y_batch in self.dataset.val_batches(2 * self.config.batch_size):
            x, y = self.prepare(x_batch, y_batch)
            with self.autocast():
                logits = self.forward(x)
            logits = logits.float()
            loss_sum.add_(F.cross_entropy(logits, y, reduction="sum"))
            finite_rows = torch.isfinite(logits).all(dim=1)
            correct.add_(((logits.argmax(dim=1) == y) & finite_rows).sum())
            seen += y.shape[0]
        if seen == 0:
            return float("nan"), 0.0
        total_loss, total_correct = torch.stack([loss_sum, correct.to(torch.float32)]).tolist()
        return total_loss / seen, total_correct / seen


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor is finite, with a single host sync for all."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


class _NonFiniteWatch:
    """Notices a non-finite running loss mid-epoch without a per-batch host sync.

    On CPU reading a scalar costs nothing, so it looks every step. On CUDA, every `interval`
    steps, it queues a copy of `not isfinite(loss_sum)` into pinned host memory behind a CUDA
    event, and reads the flag only once the event has completed: the device queue never
    waits for the host. A diverged epoch therefore stops within a few dozen steps. The event
    is recorded on the current stream of the trial's device (the one the copy is queued
    on), which need not be the current device: with ``cuda:1`` an event on GPU 0's stream
    would complete before the copy did.
    """

    def __init__(self, device: torch.device, interval: int = 16) -> None:
        self.device = device
        self.interval = interval
        self._event: torch.cuda.Event | None = None
        self._flag: torch.Tensor | None = None
        if device.type == "cuda":
            self._flag = torch.zeros((), dtype=torch.bool, pin_memory=True)

    def tripped(self, step: int, loss_sum: torch.Tensor) -> bool:
        if self._flag is None:
            if self.device.type != "cpu" and step % self.interval:
                return False
            return not bool(torch.isfinite(loss_sum))
        if self._event is not None and self._event.query():
            self._event = None
            if bool(self._flag):
                return True
        if self._event is None and step % self.interval == 0:
            self._flag.copy_(~torch.isfinite(loss_sum), non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(self.device))
        return False


class _CallableModule(types.ModuleType):
    """This module, callable as `train()`: see the note in `trainers/__init__.py`."""

    def __call__(
        self,
        config: TrainConfig,
        on_epoch: EpochCallback | None = None,
        *,
        checkpoint_path: str | Path | None = None,
        resume_from: str | Path | None = None,
        checkpoint_last: bool = True,
    ) -> TrialResult:
        return train(
            config,
            on_epoch,
            checkpoint_path=checkpoint_path,
            resume_from=resume_from,
            checkpoint_last=checkpoint_last,
        )


sys.modules[__name__].__class__ = _CallableModule
