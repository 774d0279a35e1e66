"""`train_fused`: K trials that differ only in lr, optimizer/norm, eps, beta and seed, trained
as one `FusedNet`; each member reports and ends exactly as its own `trainers.train()` would.

Per member, as in its solo trial (`trainers.train.setup_trial` / `EpochRunner`):

- **initial weights**: torch is seeded with the member's seed and its model is built as
  `setup_trial` builds it, then the members are stacked;
- **data**: its own `torch.Generator` on the data's device, seeded with its seed, draws its
  order, crops and flips from the dataset (a dataset whose content depends on the seed,
  `synthetic`, is loaded once per seed; others once for all);
- **dropout**: its own generator; on CPU it starts from the torch state the solo run has
  after building its model, so it draws the solo run's masks. On CUDA it is a CUDA
  generator seeded with the member's seed (a solo CUDA run's fused dropout kernel draws
  other masks; CUDA runs are not bit-reproducible anyway: cuDNN autotuning, bf16);
- **BatchNorm statistics, momentum buffers, input power P**: its own rows/channels;
- **lr schedule and warmup**: its own base lr through the bundle's schedule;
- **divergence**: the rule of `trainers.train` per member. A non-finite running loss stops
  the member at that step (on CPU checked every step, on CUDA through a pinned copy read
  once its event completed, as `_NonFiniteWatch`); it is evaluated with its weights of
  that moment and reported diverged for that epoch, its state is then zeroed ("parked")
  so that its slot computes only finite zeros while the others go on, and it gets no
  further updates or callbacks. Its loss is masked out of the summed loss, and every
  fused operation keeps members apart (grouped convs, batched matmuls, per-channel BN,
  per-member cross entropy), so its NaNs never reach another member.

Timing fields of `EpochMetrics` are the bundle's: `epoch_seconds` is the fused epoch's
wall time, `images_per_second` a member's images over the fused training time (the
bundle processes K times as many), and every `TrialResult.wall_seconds` is the bundle's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers.checkpoint import (
    CHECKPOINT_FORMAT,
    check_device_type,
    check_writable,
    config_differences,
    save_checkpoint,
)
from trainers.config import EpochMetrics, TrainConfig, TrialResult
from trainers.device import device_name, resolve_device, use_amp, use_channels_last
from trainers.fused._model import FusedNet, fuse_models
from trainers.fused._optim import FusedINSGD, MemberRule
from trainers.schedules import schedule_factor, warmup_factor

__all__ = ["FusedRunner", "can_fuse", "member_rule", "setup_fused", "train_fused"]

MemberEpochCallback = Callable[[int, EpochMetrics], Any]

#: The fields in which the members of a bundle may differ.
VARYING_FIELDS: tuple[str, ...] = ("lr", "optimizer", "norm", "eps", "beta", "seed")
#: Fields only INSGD members use: they must agree among those, SGD members ignore them.
INSGD_FIELDS: tuple[str, ...] = ("normalizer", "granularity")
#: Datasets whose content (not only order) depends on the seed: loaded once per seed.
SEEDED_DATASETS: frozenset[str] = frozenset({"synthetic"})
#: Registry models whose `forward` code has been checked to run on packed activations
#: (only per-channel ops between the layers `fuse_models` replaces); wide ResNets too.
FUSABLE_MODELS: tuple[str, ...] = (
    "mlp",
    "mnist-toy",
    "toy-cnn",
    "resnet20",
    "resnet18",
    "resnet50",
)


def can_fuse(configs: Sequence[TrainConfig]) -> str | None:
    """None when `configs` can train as one bundle, else the reason why not (one line)."""
    configs = list(configs)
    if not configs:
        return "no configurations to fuse"
    for index, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            return f"configuration {index} is a {type(config).__name__}, not a TrainConfig"
    first = configs[0].to_dict()
    shared = [key for key in first if key not in (*VARYING_FIELDS, *INSGD_FIELDS)]
    for index, config in enumerate(configs[1:], start=1):
        data = config.to_dict()
        differ = [key for key in shared if data[key] != first[key]]
        if differ:
            details = ", ".join(f"{key}={data[key]!r} (not {first[key]!r})" for key in differ)
            return (
                f"configuration {index} differs from configuration 0 in {details}; fused "
                f"trials may differ only in {', '.join(VARYING_FIELDS)}"
            )
    insgd = [c for c in configs if c.optimizer == "insgd"]
    for key in INSGD_FIELDS:
        values = sorted({getattr(c, key) for c in insgd})
        if len(values) > 1:
            return f"the INSGD members differ in {key} ({', '.join(values)}); a bundle has one"
    if configs[0].compile:
        return "compile=True: fused trials run the fused model eagerly"
    return _model_reason(configs[0].model)


def _model_reason(name: str) -> str | None:
    from trainers.models import WRN_PATTERN, check_model_name

    try:
        check_model_name(name)
    except ValueError as exc:
        return str(exc)
    if name in FUSABLE_MODELS or name.startswith("wrn-"):
        return None
    return (
        f"model {name!r} cannot fuse: its forward has not been checked for packed "
        f"activations (fusable: {', '.join((*FUSABLE_MODELS, WRN_PATTERN))})"
    )


def member_rule(config: TrainConfig) -> MemberRule:
    """The optimizer rule of one member, as `trainers.train.build_optimizer` reads it."""
    return MemberRule(
        optimizer=config.optimizer,
        lr=config.lr,
        norm=config.norm,
        eps=config.eps,
        beta=config.effective_beta,
    )


def train_fused(
    configs: Sequence[TrainConfig],
    on_epoch: MemberEpochCallback | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    checkpoint_last: bool = True,
) -> list[TrialResult]:
    """Train `configs` as one bundle; one `TrialResult` per config, in order.

    `on_epoch(member_index, metrics)` runs for every member that trained the epoch, after
    that epoch's checkpoint is written to `checkpoint_path` (if given; it holds all
    members). `resume_from` continues a bundle from such a checkpoint and reproduces the
    uninterrupted run on CPU. `checkpoint_last=False` skips the checkpoint of the bundle's
    last epoch. Configs that cannot fuse (`can_fuse`), bad input or a checkpoint of other
    configs raise ValueError / FileNotFoundError before any training.
    """
    configs = list(configs)
    reason = can_fuse(configs)
    if reason is not None:
        raise ValueError(f"cannot fuse these trials: {reason}")
    for config in configs:
        config.validate()
    started = time.perf_counter()
    first = configs[0]
    device = resolve_device(first)
    resumed = (
        load_fused_checkpoint(resume_from, configs, device) if resume_from is not None else None
    )
    if checkpoint_path is not None:
        check_writable(checkpoint_path)

    runner = setup_fused(configs, device)
    histories: list[list[EpochMetrics]] = [[] for _ in configs]
    prior_seconds = 0.0
    try:
        if resumed is not None:
            histories = [[EpochMetrics(**row) for row in rows] for rows in resumed["histories"]]
            runner.load_state_dict(resumed, histories)
            prior_seconds = float(resumed["wall_seconds"])
        done = max((len(h) for h in histories), default=0)
        for epoch in range(done + 1, first.epochs + 1):
            if all(runner.finished):
                break
            metrics = runner.run_epoch(epoch)
            for history, row in zip(histories, metrics, strict=True):
                if row is not None:
                    history.append(row)
            last = epoch >= first.epochs or all(runner.finished)
            if checkpoint_path is not None and (checkpoint_last or not last):
                save_checkpoint(
                    checkpoint_path,
                    {
                        "kind": "fused",
                        "configs": [c.to_dict() for c in configs],
                        "epoch": epoch,
                        **runner.state_dict(),
                        "histories": [[row.to_dict() for row in h] for h in histories],
                        "wall_seconds": prior_seconds + time.perf_counter() - started,
                    },
                )
            if on_epoch is not None:
                for index, row in enumerate(metrics):
                    if row is not None:
                        on_epoch(index, row)
    finally:
        runner.close()

    wall = prior_seconds + time.perf_counter() - started
    name = device_name(device)
    return [
        TrialResult(
            config=config,
            epochs=history,
            final_val_accuracy=history[-1].val_accuracy,
            best_val_accuracy=max(row.val_accuracy for row in history),
            final_train_loss=history[-1].train_loss,
            diverged=history[-1].diverged,
            epochs_completed=len(history),
            wall_seconds=wall,
            device_name=name,
        )
        for config, history in zip(configs, histories, strict=True)
    ]


def setup_fused(
    configs: Sequence[TrainConfig],
    device: torch.device | None = None,
    *,
    datasets: Sequence[Any] | None = None,
) -> FusedRunner:
    """Everything `train_fused` builds before its first epoch (see `setup_trial`).

    `datasets` (one per member, possibly the same object) replaces loading, as
    `setup_trial`'s `dataset` does for benchmarks.
    """
    from trainers.data import check_dataset_name, load_dataset
    from trainers.models import build_model

    configs = list(configs)
    reason = can_fuse(configs)
    if reason is not None:
        raise ValueError(f"cannot fuse these trials: {reason}")
    first = configs[0]
    device = resolve_device(first) if device is None else device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
    if datasets is None:
        check_dataset_name(first.dataset)
        loaded: dict[int | None, Any] = {}
        member_data = []
        for config in configs:
            key = config.seed if config.dataset in SEEDED_DATASETS else None
            if key not in loaded:
                loaded[key] = load_dataset(
                    config.dataset,
                    data_dir=config.data_dir,
                    download=config.download,
                    device=str(device),
                    seed=config.seed,
                    val_fraction=config.val_fraction,
                    augment=config.augment,
                    **config.dataset_options,
                )
            member_data.append(loaded[key])
    else:
        member_data = list(datasets)
        if len(member_data) != len(configs):
            raise ValueError(f"{len(member_data)} datasets for {len(configs)} configurations")

    models = []
    dropout_generators = []
    for config, data in zip(configs, member_data, strict=True):
        torch.manual_seed(config.seed)  # as setup_trial: the model's init comes from here
        models.append(
            build_model(
                config.model,
                in_channels=data.in_channels,
                image_size=data.image_size,
                num_classes=data.num_classes,
                batchnorm=config.batchnorm,
                **config.model_options,
            )
        )
        # Solo dropout draws from torch's default generator after the model's init.
        if device.type == "cpu":
            generator = torch.Generator()
            generator.set_state(torch.get_rng_state())
        else:
            generator = torch.Generator(device=device).manual_seed(config.seed)
        dropout_generators.append(generator)
    net = fuse_models(models, name=first.model)
    del models
    channels_last = use_channels_last(first, device)
    net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net.set_generators(dropout_generators)

    insgd = [c for c in configs if c.optimizer == "insgd"]
    shared = insgd[0] if insgd else first
    optimizer = FusedINSGD(
        net,
        [member_rule(c) for c in configs],
        momentum=first.momentum,
        dampening=first.dampening,
        nesterov=first.nesterov,
        weight_decay=first.weight_decay,
        normalizer=shared.normalizer,
        granularity=shared.granularity,
    )
    data_generators = [
        torch.Generator(device=torch.device(getattr(data, "device", device))).manual_seed(c.seed)
        for c, data in zip(configs, member_data, strict=True)
    ]
    return FusedRunner(
        configs,
        net,
        optimizer,
        member_data,
        device,
        data_generators,
        dropout_generators,
        channels_last,
    )


class FusedRunner:
    """One epoch of a bundle and its evaluation (`EpochRunner` for K members)."""

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        net: FusedNet,
        optimizer: FusedINSGD,
        datasets: Sequence[Any],
        device: torch.device,
        data_generators: Sequence[torch.Generator],
        dropout_generators: Sequence[torch.Generator],
        channels_last: bool,
    ) -> None:
        self.configs = list(configs)
        self.config = self.configs[0]  # the shared fields
        self.num_members = len(self.configs)
        self.net = net
        self.optimizer = optimizer
        self.datasets = list(datasets)
        self.device = device
        self.data_generators = list(data_generators)
        self.dropout_generators = list(dropout_generators)
        self.channels_last = channels_last
        self.amp = use_amp(self.config, device)
        self.finished = [False] * self.num_members
        self.live = torch.ones(self.num_members, dtype=torch.float32, device=device)
        data = self.datasets[0]
        batch_size = self.config.batch_size
        counter = getattr(data, "steps_per_epoch", None)
        self.steps_per_epoch = max(
            1,
            counter(batch_size) if counter is not None else math.ceil(data.num_train / batch_size),
        )
        self.divergence_threshold = self.config.divergence_factor * math.log(
            max(2, data.num_classes)
        )

    def close(self) -> None:
        """Detach the energy probes: the fused model may outlive the bundle."""
        self.optimizer.remove_probes()

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    # -- members ------------------------------------------------------------------------

    def park(self, member: int) -> None:
        """Member `member` is done: zero its state, stop its updates, mask its loss."""
        self.net.park_member(member)
        self.optimizer.park(member)
        self.live[member] = 0.0

    # -- data ---------------------------------------------------------------------------

    def pack(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Member batches -> packed input (B, K*C, ...) and labels (B, K) on the device."""
        x = torch.cat([t.to(self.device, non_blocking=True) for t in xs], dim=1)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.stack([t.to(self.device, non_blocking=True) for t in ys], dim=1)
        return x, y

    def train_batches(self, running: Sequence[bool]) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of packed batches: each running member's own; a finished member's slot
        gets a running member's batch (its zeroed weights ignore it)."""
        batch_size = self.config.batch_size
        own = [
            self.datasets[m].train_batches(batch_size, self.data_generators[m])
            for m in range(self.num_members)
            if running[m]
        ]
        slots = []
        position = 0
        for m in range(self.num_members):
            slots.append(position if running[m] else 0)
            position += running[m]
        for batches in zip(*own, strict=False):
            yield self.pack([batches[s][0] for s in slots], [batches[s][1] for s in slots])

    def val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation set(s), packed: one shared set is repeated for every member."""
        batch_size = 2 * self.config.batch_size
        unique = list({id(d): d for d in self.datasets}.values())
        if len(unique) == 1:
            k = self.num_members
            for x, y in unique[0].val_batches(batch_size):
                x = x.to(self.device, non_blocking=True)
                x = x.repeat(1, k, *([1] * (x.dim() - 2)))
                if self.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(self.device, non_blocking=True)
                yield x, y.unsqueeze(1).expand(-1, k).contiguous()
            return
        slot = [unique.index(d) for d in self.datasets]
        for batches in zip(*(d.val_batches(batch_size) for d in unique), strict=True):
            yield self.pack([batches[s][0] for s in slot], [batches[s][1] for s in slot])

    # -- training -----------------------------------------------------------------------

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward, backward, step on a packed batch; (per-member loss (K,), logits
        (B, K, classes)), both detached. No host reads."""
        with self.autocast():
            logits = self.net(x)
            loss = member_cross_entropy(logits, y).mean(dim=0)
            total = (loss * self.live).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def run_epoch(self, epoch: int) -> list[EpochMetrics | None]:
        """Train and evaluate one epoch; metrics per member, None for finished members."""
        config, k = self.config, self.num_members
        start = time.perf_counter()
        factor = schedule_factor(config.schedule, epoch, config.epochs, config.warmup_epochs)
        bases = [c.lr * factor for c in self.configs]
        warming = epoch <= config.warmup_epochs
        lrs = list(bases)
        if not warming:
            self.optimizer.lrs = list(lrs)
        running = [not done for done in self.finished]
        if not any(running):
            raise ValueError("every member of the bundle has finished")

        self.net.train()
        loss_sums = torch.zeros(k, dtype=torch.float32, device=self.device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.device)
        seen = 0
        stopped: dict[int, _Stop] = {}
        watch = _MemberWatch(self.device, k)
        for step, (x, y) in enumerate(self.train_batches(running)):
            if warming:
                ramp = warmup_factor(epoch, step, self.steps_per_epoch, config.warmup_epochs)
                lrs = [base * ramp for base in bases]
                self.optimizer.lrs = list(lrs)
            loss, logits = self.train_step(x, y)
            count = y.shape[0]
            loss_sums.add_(loss.float(), alpha=count)
            correct.add_((logits.argmax(dim=2) == y).sum(dim=0))
            seen += count
            for m in watch.tripped(step, loss_sums):
                if running[m] and m not in stopped:
                    stopped[m] = _Stop(
                        loss_sum=loss_sums[m].clone(),
                        correct=correct[m].clone(),
                        seen=seen,
                        lr=lrs[m],
                        state=self.net.member_state_dict(m),
                    )
                    self.park(m)
            if len(stopped) == sum(running):
                break  # every member of this epoch has stopped, as a solo loop breaks
        if seen == 0:
            raise ValueError(f"dataset {config.dataset!r} yielded no training batches")
        for m, stop in stopped.items():
            loss_sums[m].copy_(stop.loss_sum)
            correct[m].copy_(stop.correct)
        sums, corrects = torch.stack([loss_sums, correct.to(torch.float32)]).tolist()
        train_seconds = time.perf_counter() - start

        evaluated = self.evaluate(running, stopped)
        out: list[EpochMetrics | None] = []
        for m in range(k):
            if not running[m]:
                out.append(None)
                continue
            member_seen = stopped[m].seen if m in stopped else seen
            train_loss = sums[m] / member_seen
            val_loss, val_accuracy = evaluated[m]
            diverged = (
                not math.isfinite(train_loss)
                or train_loss > self.divergence_threshold
                or not math.isfinite(val_loss)
            )
            out.append(
                EpochMetrics(
                    epoch=epoch,
                    train_loss=train_loss,
                    train_accuracy=corrects[m] / member_seen,
                    val_loss=val_loss,
                    val_accuracy=val_accuracy,
                    lr=stopped[m].lr if m in stopped else lrs[m],
                    epoch_seconds=time.perf_counter() - start,
                    images_per_second=(
                        member_seen / train_seconds if train_seconds > 0 else float("inf")
                    ),
                    diverged=diverged,
                )
            )
            if diverged:
                self.finished[m] = True
                if m not in stopped:
                    self.park(m)
        return out

    @torch.no_grad()
    def evaluate(
        self, running: Sequence[bool], stopped: dict[int, _Stop]
    ) -> list[tuple[float, float]]:
        """(val loss, val accuracy) per member; (NaN, 0.0) for non-finite weights, as solo.

        A member stopped mid-epoch is evaluated with the state it stopped with, put back in
        its slot for this pass only. A member with non-finite state is parked before the
        pass, so no NaN or inf runs through the fused model.
        """
        k = self.num_members
        finite = self.net.members_finite()
        flags = [finite]
        order = sorted(stopped)
        for m in order:
            flags.append(
                torch.stack(
                    [
                        torch.isfinite(t).all()
                        for t in stopped[m].state.values()
                        if t.is_floating_point()
                    ]
                )
                .all()
                .reshape(1)
            )
        values = torch.cat(flags).tolist()
        member_ok = values[:k]
        for m, ok in zip(order, values[k:], strict=True):
            member_ok[m] = ok
        result = [(float("nan"), 0.0)] * k
        wanted = [running[m] and bool(member_ok[m]) for m in range(k)]
        for m in range(k):
            if running[m] and m not in stopped and not member_ok[m]:
                self.park(m)
        if not any(wanted):
            return result
        for m in order:
            if wanted[m]:
                self.net.load_member_state_dict(m, stopped[m].state)
        try:
            sums, counts, seen = self._val_pass()
        finally:
            for m in order:
                if wanted[m]:
                    self.net.park_member(m)
        for m in range(k):
            if wanted[m] and seen:
                result[m] = (sums[m] / seen, counts[m] / seen)
        return result

    def _val_pass(self) -> tuple[list[float], list[float], int]:
        self.net.eval()
        k = self.num_members
        loss_sum = torch.zeros(k, dtype=torch.float32, device=self.device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.device)
        seen = 0
        for x, y in self.val_batches():
            with self.autocast():
                logits = self.net(x)
            logits = logits.float()
            loss_sum.add_(member_cross_entropy(logits, y).sum(dim=0))
            finite_rows = torch.isfinite(logits).all(dim=2)
            correct.add_(((logits.argmax(dim=2) == y) & finite_rows).sum(dim=0))
            seen += y.shape[0]
        sums, counts = torch.stack([loss_sum, correct.to(torch.float32)]).tolist()
        return sums, counts, seen

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and every member's random streams (for `save_checkpoint`)."""
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "device_type": self.device.type,
                "data": [g.get_state() for g in self.data_generators],
                "dropout": [g.get_state() for g in self.dropout_generators],
            },
        }

    def load_state_dict(self, state: dict[str, Any], histories: Sequence[Sequence[Any]]) -> None:
        """Restore `state_dict()`; members whose history ended diverged stay finished."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        for generator, saved in zip(self.data_generators, rng["data"], strict=True):
            generator.set_state(saved)
        for generator, saved in zip(self.dropout_generators, rng["dropout"], strict=True):
            generator.set_state(saved)
        for m, history in enumerate(histories):
            if history and history[-1].diverged:
                self.finished[m] = True
                self.live[m] = 0.0


class _Stop:
    """What a member had when it stopped mid-epoch: its accumulators, step count, lr and
    state (for its evaluation)."""

    __slots__ = ("correct", "loss_sum", "lr", "seen", "state")

    def __init__(
        self, *, loss_sum: Tensor, correct: Tensor, seen: int, lr: float, state: dict[str, Tensor]
    ) -> None:
        self.loss_sum = loss_sum
        self.correct = correct
        self.seen = seen
        self.lr = lr
        self.state = state


class _MemberWatch:
    """`trainers.train._NonFiniteWatch` for K running losses: which members went non-finite.

    On CPU it looks every step (reading costs nothing there). On CUDA, every `interval`
    steps, it queues a copy of the (K,) flags into pinned host memory behind an event and
    reads them only once the event has completed: the device queue never waits.
    """

    def __init__(self, device: torch.device, num_members: int, interval: int = 16) -> None:
        self.device = device
        self.interval = interval
        self._event: torch.cuda.Event | None = None
        self._flags: Tensor | None = None
        if device.type == "cuda":
            self._flags = torch.zeros(num_members, dtype=torch.bool, pin_memory=True)

    def tripped(self, step: int, loss_sums: Tensor) -> list[int]:
        if self._flags is None:
            if self.device.type != "cpu" and step % self.interval:
                return []
            return _true_at((~torch.isfinite(loss_sums)).tolist())
        out: list[int] = []
        if self._event is not None and self._event.query():
            self._event = None
            out = _true_at(self._flags.tolist())
        if self._event is None and step % self.interval == 0:
            self._flags.copy_(~torch.isfinite(loss_sums), non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        return out


def member_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross entropy per sample and member, (B, K), from logits (B, K, C) and labels (B, K).

    Computed over B*K rows of C logits: the same last-dimension kernels (forward and
    backward) as the solo loss on (B, C), so each member's gradient is its solo gradient.
    """
    classes = logits.shape[-1]
    rows = F.cross_entropy(logits.reshape(-1, classes), y.reshape(-1), reduction="none")
    return rows.view(y.shape)


def _true_at(flags: Sequence[bool]) -> list[int]:
    return [index for index, flag in enumerate(flags) if flag]


def load_fused_checkpoint(
    path: str | Path, configs: Sequence[TrainConfig], device: torch.device
) -> dict[str, Any]:
    """Read a bundle checkpoint for `configs` on `device` (see `trainers.checkpoint`)."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint {str(source)!r} not found")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise ValueError(f"{str(source)!r} is not a readable training checkpoint: {exc}") from exc
    if (
        not isinstance(payload, dict)
        or payload.get("format") != CHECKPOINT_FORMAT
        or payload.get("kind") != "fused"
    ):
        raise ValueError(f"{str(source)!r} is not a fused-trials checkpoint")
    saved = payload["configs"]
    if len(saved) != len(configs):
        raise ValueError(
            f"checkpoint {str(source)!r} holds {len(saved)} members, not {len(configs)}"
        )
    for index, (old, config) in enumerate(zip(saved, configs, strict=True)):
        details = config_differences(old, config)
        if details:
            raise ValueError(
                f"checkpoint {str(source)!r} was written for another configuration of "
                f"member {index}: {details}"
            )
    check_device_type(payload, source, device)
    return payload
