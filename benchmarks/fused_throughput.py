"""Fused trials vs the same trials one after another: training images/second of K members.

Each member is a real trial configuration (SGD, INSGD-l1, INSGD-l2 in turn, their own lr
and seed) on one synthetic set (3x32x32, or `--shape`, e.g. digits' 1,8,8) with crop+flip
on the device. "solo" runs each member's epochs (or the first `--solo-members` members':
a solo trial's rate does not depend on how many run after it; the presets time 4)
with `trainers.train.setup_trial` / `EpochRunner.run_epoch`, one member after another,
as separate trials on one device would; "fused" runs all K at once with
`trainers.fused.setup_fused` / `FusedRunner.run_epoch`. Both figures are the members'
training images over training seconds (the validation pass excluded), medians over the
measured epochs after untimed warm-up epochs (cuDNN autotuning). `--rounds R` repeats every
(model, K) pair R times, solo first in even rounds and fused first in odd ones, and reports
the medians (rates and the ratio), as the other benchmarks do on this shared machine.

    python benchmarks/fused_throughput.py                   # CUDA preset, or the CPU one
    python benchmarks/fused_throughput.py --quick           # every model, K 1 and 4, tiny
    python benchmarks/fused_throughput.py --device cpu --models toy-cnn --members 2 \\
        --images 512 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from dataclasses import replace
from typing import Any

import torch

from trainers.config import TrainConfig
from trainers.device import device_name, resolve_device, use_amp

PRESETS: dict[str, dict[str, Any]] = {
    # the sizes (K 1, 4, 16, 64) and its target's (toy-cnn at K 32); a solo
    # trial's rate does not depend on how many run back to back, so "solo" times 4 of
    # them (every variant) instead of up to 64 (`--solo-members`)
    "cuda": {
        "models": "toy-cnn,resnet20",
        "members": "1,4,16,32,64",
        "batch_size": 128,
        "images": 10_240,
        "epochs": 2,
        "warmup_epochs": 1,
        "solo_members": 4,
    },
    "cpu": {
        "models": "mlp,mnist-toy,toy-cnn",
        "members": "1,4,16,64",
        "batch_size": 64,
        "images": 1024,
        "epochs": 2,
        "warmup_epochs": 1,
        "solo_members": 4,
    },
    # --quick: a smoke run of every model and two bundle sizes, in seconds
    "quick": {
        "models": "mlp,mnist-toy,toy-cnn",
        "members": "1,4",
        "batch_size": 32,
        "images": 128,
        "epochs": 1,
        "warmup_epochs": 0,
    },
}
VARIANTS: tuple[dict[str, Any], ...] = (
    {"optimizer": "sgd", "lr": 0.05},
    {"optimizer": "insgd", "norm": "l1", "lr": 0.1},
    {"optimizer": "insgd", "norm": "l2", "lr": 0.1},
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", help="comma-separated model names")
    parser.add_argument("--members", help="comma-separated bundle sizes K")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--images", type=int, help="synthetic training images per epoch")
    parser.add_argument("--epochs", type=int, help="measured epochs")
    parser.add_argument("--warmup-epochs", type=int, help="untimed epochs first (autotune)")
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast"
    )
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC"
    )
    parser.add_argument(
        "--solo-members",
        type=int,
        help="time this many of the K members solo, one after another (default: the "
        "preset's 4, or all K); the solo rate is their images over their seconds",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--shape",
        default="3,32,32",
        help="synthetic image shape C,H,W (default 3,32,32; 1,8,8 is digits' shape)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every (model, K) pair this often, solo and fused in alternating order; "
        "medians are reported",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="the tiny 'quick' preset (a smoke test)"
    )
    return parser.parse_args(argv)


def _train_seconds(rows: list[Any], images: int) -> float:
    return statistics.median(images / row.images_per_second for row in rows)


def measure(
    args: argparse.Namespace,
    device: torch.device,
    model: str,
    k: int,
    preset: dict[str, Any],
    fused_first: bool = False,
) -> dict[str, Any]:
    from trainers.data import load_dataset
    from trainers.fused import setup_fused
    from trainers.train import setup_trial

    batch = args.batch_size or preset["batch_size"]
    images = args.images or preset["images"]
    epochs = args.epochs or preset["epochs"]
    warmup = preset["warmup_epochs"] if args.warmup_epochs is None else args.warmup_epochs
    shape = [int(n) for n in args.shape.split(",")]
    base = TrainConfig(
        dataset="synthetic",
        dataset_options={"num_train": images, "num_val": batch, "shape": shape},
        model=model,
        batch_size=batch,
        epochs=warmup + epochs,
        device=str(device),
        amp=args.amp,
        channels_last=args.channels_last,
    )
    configs = [replace(base, seed=i, **VARIANTS[i % len(VARIANTS)]) for i in range(k)]
    # One dataset for all: the members differ in order, crops and flips, not in images.
    data = load_dataset(
        "synthetic",
        device=str(device),
        num_train=images,
        num_val=batch,
        augment=True,
        shape=shape,
    )
    seen = (images // batch) * batch
    solo_count = min(k, args.solo_members or preset.get("solo_members") or k)

    def solo() -> float:
        seconds = 0.0
        for config in configs[:solo_count]:
            runner = setup_trial(config, device, dataset=data)
            try:
                rows = [runner.run_epoch(e) for e in range(1, warmup + epochs + 1)][warmup:]
            finally:
                runner.close()
            seconds += _train_seconds(rows, seen)
        return seconds

    def fused_run() -> tuple[float, Any]:
        runner = setup_fused(configs, device, datasets=[data] * k)
        try:
            out = [runner.run_epoch(e) for e in range(1, warmup + epochs + 1)][warmup:]
        finally:
            runner.close()
        return _train_seconds([rows[0] for rows in out], seen), runner

    if fused_first:
        fused_seconds, fused = fused_run()
        solo_seconds = solo()
    else:
        solo_seconds = solo()
        fused_seconds, fused = fused_run()
    solo_rate, fused_rate = solo_count * seen / solo_seconds, k * seen / fused_seconds
    return {
        "model": model,
        "members": k,
        "batch_size": batch,
        "images_per_epoch": seen,
        "solo_members": solo_count,
        "amp_bf16": use_amp(base, device),
        "channels_last": fused.channels_last,
        "solo_images_per_second": solo_rate,
        "fused_images_per_second": fused_rate,
        "speedup": fused_rate / solo_rate,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(TrainConfig(device=args.device))
    preset = PRESETS["quick" if args.quick else "cuda" if device.type == "cuda" else "cpu"]
    models = [m.strip() for m in (args.models or preset["models"]).split(",") if m.strip()]
    sizes = [int(k) for k in (args.members or preset["members"]).split(",") if k.strip()]
    rounds = [
        [measure(args, device, m, k, preset, fused_first=r % 2 == 1) for m in models for k in sizes]
        for r in range(max(1, args.rounds))
    ]
    rows = [_median_row(pairs) for pairs in zip(*rounds, strict=True)]
    return {
        "benchmark": "fused_throughput",
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "shape": args.shape,
        "results": rows,
    }


def _median_row(rows: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """One (model, K) over the rounds: median rates and the median of the ratios."""
    row = dict(rows[0])
    for key in ("solo_images_per_second", "fused_images_per_second", "speedup"):
        row[key] = statistics.median(r[key] for r in rows)
    row["rounds"] = len(rows)
    return row


def print_table(result: dict[str, Any]) -> None:
    print(
        f"fused vs solo training throughput on {result['device']} (torch {result['torch']}, "
        f"{result['threads']} CPU thread(s)), synthetic {result['shape']}, crop+flip on device"
    )
    print(
        f"{'model':<10} {'K':>3} {'batch':>5} {'bf16':>5} {'NHWC':>5} "
        f"{'solo img/s':>11} {'fused img/s':>12} {'speedup':>8}"
    )
    for row in result["results"]:
        print(
            f"{row['model']:<10} {row['members']:>3} {row['batch_size']:>5} "
            f"{'yes' if row['amp_bf16'] else 'no':>5} "
            f"{'yes' if row['channels_last'] else 'no':>5} "
            f"{row['solo_images_per_second']:>11,.0f} {row['fused_images_per_second']:>12,.0f} "
            f"{row['speedup']:>7.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"fused_throughput: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
