"""`insgd-study train`: train one configuration by hand and watch it epoch by epoch.

The flags mirror `trainers.config.TrainConfig` field for field; a flag left out takes the
dataclass default, so there is one source of truth for defaults (shown in ``--help``).
torch is imported only when the command runs, so registering it costs the other commands
nothing. Bad input (a bad value, unknown dataset/model, missing data, an unusable device,
a foreign checkpoint) is rejected by `TrainConfig` / `train()` before anything is trained
or written, and `study.cli` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import MISSING, fields
from typing import Any, TextIO

from study.errors import UsageError
from trainers.config import (
    GRANULARITIES,
    NORMALIZERS,
    NORMS,
    OPTIMIZERS,
    SCHEDULES,
    EpochMetrics,
    TrainConfig,
    TrialResult,
)

_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one configuration and print its metrics epoch by epoch",
        description=(
            "Train one configuration (no Ray, no database) and print one row per epoch. "
            "Defaults train an INSGD MLP on sklearn's digits in seconds on a CPU."
        ),
    )
    data = parser.add_argument_group("data and model")
    _opt(data, "--dataset", str, "digits, mnist5k, cifar10, cifar100, imagenet or synthetic")
    _opt(data, "--model", str, "mlp, toy-cnn, mnist-toy, resnet20, resnet18, resnet50 or wrn-D-W")
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="where dataset files live (default: $INSGD_DATA_DIR, else ./data)",
    )
    data.add_argument(
        "--download", action="store_true", default=None, help="download missing dataset files"
    )
    data.add_argument(
        "--no-batchnorm",
        dest="batchnorm",
        action="store_false",
        default=None,
        help="build the model without normalization layers",
    )
    data.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop/flip augmentation (default: the dataset's choice)",
    )
    _opt(data, "--val-fraction", float, "fraction of the training set held out")
    data.add_argument(
        "--model-option",
        dest="model_options",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra build_model option (repeatable; "
        "VALUE is parsed as JSON when it can be, e.g. hidden=[64,32])",
    )

    data.add_argument(
        "--dataset-option",
        dest="dataset_options",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra load_dataset option (repeatable, VALUE as JSON when it parses, "
        "e.g. num_train=2048 for synthetic)",
    )

    optim = parser.add_argument_group("optimizer")
    _opt(optim, "--optimizer", str, "sgd or insgd", choices=OPTIMIZERS)
    _opt(optim, "--norm", str, "INSGD input energy norm", choices=NORMS)
    _opt(
        optim, "--normalizer", str, "INSGD normalizer: log (published) or nlms", choices=NORMALIZERS
    )
    _opt(
        optim,
        "--granularity",
        str,
        "INSGD energy per conv layer or per input channel",
        choices=GRANULARITIES,
    )
    _opt(optim, "--eps", float, "INSGD rectifier floor epsilon")
    optim.add_argument(
        "--beta",
        type=float,
        default=None,
        help="INSGD input-power momentum (default: equal to --momentum)",
    )
    _opt(optim, "--lr", float, "base learning rate")
    _opt(optim, "--momentum", float, "momentum")
    _opt(optim, "--dampening", float, "momentum dampening")
    optim.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    _opt(optim, "--weight-decay", float, "L2 weight decay")
    _opt(optim, "--schedule", str, "lr schedule", choices=SCHEDULES)
    _opt(optim, "--warmup-epochs", int, "linear per-step lr warmup over this many epochs")

    loop = parser.add_argument_group("training loop")
    _opt(loop, "--batch-size", int, "training batch size")
    _opt(loop, "--epochs", int, "number of epochs")
    _opt(loop, "--seed", int, "random seed (weights, dropout, data order, augmentation)")
    _opt(loop, "--device", str, "auto (cuda if available), cpu, cuda or cuda:N")
    loop.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for CUDA GPUs of compute capability 8.0+, "
        "off for older GPUs and CPU)",
    )
    loop.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory layout (default: on for CUDA, off for CPU)",
    )
    loop.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the model (optional, slower start)",
    )
    _opt(
        loop,
        "--divergence-factor",
        float,
        "diverged when the train loss exceeds this x ln(num_classes)",
    )
    loop.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="write a checkpoint here after every epoch (atomically)",
    )
    loop.add_argument(
        "--resume",
        metavar="PATH",
        default=None,
        help="continue the trial from a checkpoint written with --checkpoint",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only the final result as JSON (non-finite numbers: null)",
    )
    parser.set_defaults(func=run)


def _opt(group: Any, flag: str, kind: type, text: str, **extra: Any) -> None:
    name = flag.lstrip("-").replace("-", "_")
    group.add_argument(
        flag, type=kind, default=None, help=f"{text} (default: {_DEFAULTS[name]})", **extra
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` the flags describe; ValueError / UsageError name a bad value."""
    values: dict[str, Any] = {}
    for item in fields(TrainConfig):
        value = getattr(args, item.name, None)
        if value is not None:
            values[item.name] = value
    for name in ("model_options", "dataset_options"):
        if name in values:
            values[name] = _parse_options(values[name], flag=f"--{name[:-1].replace('_', '-')}")
    return TrainConfig(**values)


def _parse_options(items: list[str], *, flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} must look like KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from trainers.train import train

    table = None if args.json else EpochTable(sys.stdout)
    result = train(
        config,
        on_epoch=None if table is None else table.row,
        checkpoint_path=args.checkpoint,
        resume_from=args.resume,
    )
    if args.json:
        print(json.dumps(_json_safe(result.to_dict()), indent=2, allow_nan=False))
    else:
        print(summary_line(result))
    return 0


class EpochTable:
    """Prints an aligned row per epoch as training goes (header before the first row)."""

    HEADER = (
        f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'val loss':>10}  "
        f"{'val acc':>7}  {'lr':>9}  {'seconds':>8}  {'img/s':>9}"
    )

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = False

    def row(self, m: EpochMetrics) -> None:
        if not self.started:
            self.out.write(self.HEADER + "\n")
            self.started = True
        flag = "  diverged" if m.diverged else ""
        self.out.write(
            f"{m.epoch:>5}  {_num(m.train_loss):>10}  {m.train_accuracy:>9.2%}  "
            f"{_num(m.val_loss):>10}  {m.val_accuracy:>7.2%}  {m.lr:>9.3g}  "
            f"{m.epoch_seconds:>8.2f}  {m.images_per_second:>9,.0f}{flag}\n"
        )
        self.out.flush()


def summary_line(result: TrialResult) -> str:
    """The final line: what the trial ended with, how long it took, where."""
    last, done = result.epochs[-1], result.epochs_completed
    outcome = (
        f"diverged in epoch {last.epoch}"
        if result.diverged
        else f"finished {done} epoch{'' if done == 1 else 's'}"
    )
    return (
        f"{outcome}: final val acc {result.final_val_accuracy:.2%}, best "
        f"{result.best_val_accuracy:.2%}, final train loss {_num(result.final_train_loss)}; "
        f"{result.wall_seconds:.1f} s on {result.device_name}"
    )


def _num(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e6 else f"{value:.3g}"


def _json_safe(value: Any) -> Any:
    """NaN/inf become null: the output must be valid JSON for `jq` and friends."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value
