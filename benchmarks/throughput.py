"""Training throughput (images/second) per model on synthetic CIFAR-shaped data.

Each measured epoch is a real `EpochRunner.run_epoch` of the training loop, built by
`trainers.train.setup_trial`, over `trainers.data`'s synthetic 3x32x32 set (held on the
device, random crop + flip on the device, as CIFAR trains): data pipeline, forward,
backward, optimizer step and the once-per-epoch sync are all in the figure. The headline
is the training seconds of one 50,000-image epoch (CIFAR-10's training set) derived from
the measured rate; the validation pass is reported separately as part of epoch seconds.

    python benchmarks/throughput.py                                  # CUDA: resnet18, resnet20
    python benchmarks/throughput.py --device cpu --models resnet20 --images 1024 --batch-size 64

Target: ResNet-18 with INSGD, batch 512, bf16 + channels_last, <= 2.0 s per 50k-image
epoch on an H100.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from typing import Any

import torch

from trainers.config import TrainConfig
from trainers.device import device_name, resolve_device, use_amp

CIFAR_TRAIN_IMAGES = 50_000
PRESETS: dict[str, dict[str, Any]] = {
    "cuda": {
        "models": "resnet18,resnet20",
        "batch_size": 512,
        "images": 50_000,
        "val_images": 10_000,
        "epochs": 3,
        "warmup_epochs": 1,
    },
    "cpu": {
        "models": "resnet20",
        "batch_size": 64,
        "images": 1_024,
        "val_images": 256,
        "epochs": 1,
        "warmup_epochs": 1,
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", help="comma-separated model names")
    parser.add_argument("--optimizers", default="insgd", help="comma-separated: sgd,insgd")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--images", type=int, help="synthetic training images per epoch")
    parser.add_argument("--val-images", type=int, help="synthetic validation images")
    parser.add_argument("--epochs", type=int, help="measured epochs")
    parser.add_argument("--warmup-epochs", type=int, help="untimed epochs first (autotune)")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for CUDA)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC layout (default: on for CUDA)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def measure(
    args: argparse.Namespace,
    device: torch.device,
    model: str,
    optimizer: str,
    preset: dict[str, Any],
) -> dict[str, Any]:
    from trainers.train import setup_trial

    batch = args.batch_size or preset["batch_size"]
    images = args.images or preset["images"]
    val_images = args.val_images or preset["val_images"]
    epochs = args.epochs or preset["epochs"]
    warmup = preset["warmup_epochs"] if args.warmup_epochs is None else args.warmup_epochs
    config = TrainConfig(
        dataset="synthetic",
        dataset_options={"num_train": images, "num_val": val_images},
        model=model,
        optimizer=optimizer,
        batch_size=batch,
        epochs=warmup + epochs,
        device=str(device),
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    runner = setup_trial(config, device)
    try:
        rows = [runner.run_epoch(epoch) for epoch in range(1, warmup + epochs + 1)][warmup:]
    finally:
        runner.close()
    rate = statistics.median(row.images_per_second for row in rows)
    return {
        "model": model,
        "optimizer": optimizer,
        "batch_size": batch,
        "images_per_epoch": runner.steps_per_epoch * batch,
        "val_images": val_images,
        "amp_bf16": use_amp(config, device),
        "channels_last": runner.channels_last,
        "compile": args.compile,
        "measured_epochs": len(rows),
        "images_per_second": rate,
        "seconds_per_50k_epoch": CIFAR_TRAIN_IMAGES / rate,
        "epoch_seconds_with_val": statistics.median(row.epoch_seconds for row in rows),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(TrainConfig(device=args.device))
    preset = PRESETS["cuda" if device.type == "cuda" else "cpu"]
    models = [m.strip() for m in (args.models or preset["models"]).split(",") if m.strip()]
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    rows = [measure(args, device, m, o, preset) for m in models for o in optimizers]
    return {
        "benchmark": "throughput",
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "results": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"training throughput on {result['device']} (torch {result['torch']}, "
        f"{result['threads']} CPU thread(s)), synthetic 3x32x32, crop+flip on device"
    )
    print(
        f"{'model':<10} {'optimizer':<9} {'batch':>5} {'bf16':>5} {'NHWC':>5} "
        f"{'img/s':>10} {'s / 50k epoch':>14} {'epoch s (+val)':>15}"
    )
    for row in result["results"]:
        print(
            f"{row['model']:<10} {row['optimizer']:<9} {row['batch_size']:>5} "
            f"{'yes' if row['amp_bf16'] else 'no':>5} "
            f"{'yes' if row['channels_last'] else 'no':>5} "
            f"{row['images_per_second']:>10,.0f} {row['seconds_per_50k_epoch']:>14.2f} "
            f"{row['epoch_seconds_with_val']:>15.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"throughput: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
