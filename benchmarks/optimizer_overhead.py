"""What INSGD costs per training iteration, relative to torch.optim.SGD(foreach=True).

One iteration = forward (with INSGD's input-energy hooks), backward, optimizer step: the
whole of what a training step pays, because the hooks are part of INSGD's price. Both
optimizers train identical copies of the model (same seed) on the same fixed batch, built
by `trainers.train.setup_trial`, the code the training loop runs.

Why interleaved: on a shared or thermally throttling machine the speed drifts by more than
the few percent being measured. Timing blocks alternate A B / B A in one process, so drift
hits both equally; the reported ratio is the median of the per-round ratios (paired), with
the ratio of the two medians beside it. On a CPU shared with other work the process's own
CPU time (`time.process_time`) is reported too: unlike wall time it does not count the
time the process waited for a core, so it is the steadier measure there (on CUDA only
wall time means anything, since the work is on the GPU).

    python benchmarks/optimizer_overhead.py --device cpu      # ResNet-20, batch 64, fp32
    python benchmarks/optimizer_overhead.py --device cuda     # ResNet-18, batch 512, bf16
    python benchmarks/optimizer_overhead.py --device cpu --breakdown --profile 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch

from trainers.config import TrainConfig
from trainers.device import device_name, resolve_device, use_amp
from trainers.train import EpochRunner, setup_trial

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"model": "resnet20", "batch_size": 64, "rounds": 10, "steps": 3, "warmup": 3},
    "cuda": {"model": "resnet18", "batch_size": 512, "rounds": 30, "steps": 20, "warmup": 30},
}
OPTIMIZERS = ("sgd", "insgd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--model", help="default: resnet20 on CPU, resnet18 on CUDA")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--rounds", type=int, help="A/B rounds (each times both optimizers)")
    parser.add_argument("--steps", type=int, help="iterations per timed block")
    parser.add_argument("--warmup", type=int, help="untimed iterations per optimizer first")
    parser.add_argument("--norm", default="l2", choices=("l1", "l2"))
    parser.add_argument("--granularity", default="layer", choices=("layer", "channel"))
    parser.add_argument("--normalizer", default="log", choices=("log", "nlms"))
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for CUDA)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time forward+backward and step separately (synced)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile N INSGD iterations and print the top operators",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _block(
    runner: EpochRunner, x: torch.Tensor, y: torch.Tensor, steps: int
) -> tuple[float, float]:
    """(wall, process CPU) seconds per iteration over `steps` back-to-back iterations."""
    _sync(runner.device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        runner.train_step(x, y)
    _sync(runner.device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _breakdown(runner: EpochRunner, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict:
    """Median seconds of forward+backward and of the step alone (synced between them)."""
    fwd_bwd, step = [], []
    for _ in range(steps):
        _sync(runner.device)
        t0 = time.perf_counter()
        with runner.autocast():
            loss = torch.nn.functional.cross_entropy(runner.forward(x), y)
        runner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(runner.device)
        t1 = time.perf_counter()
        runner.optimizer.step()
        _sync(runner.device)
        fwd_bwd.append(t1 - t0)
        step.append(time.perf_counter() - t1)
    return {
        "forward_backward_ms": 1e3 * statistics.median(fwd_bwd),
        "step_ms": 1e3 * statistics.median(step),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(TrainConfig(device=args.device))
    preset = PRESETS["cuda" if device.type == "cuda" else "cpu"]
    model = args.model or preset["model"]
    batch = args.batch_size or preset["batch_size"]
    rounds = args.rounds or preset["rounds"]
    steps = args.steps or preset["steps"]
    warmup = preset["warmup"] if args.warmup is None else args.warmup

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    shape = SimpleNamespace(
        in_channels=3, image_size=32, num_classes=10, num_train=batch, device=device
    )
    runners: dict[str, EpochRunner] = {}
    for name in OPTIMIZERS:
        config = TrainConfig(
            dataset="synthetic",
            model=model,
            optimizer=name,
            lr=0.05,
            batch_size=batch,
            norm=args.norm,
            granularity=args.granularity,
            normalizer=args.normalizer,
            device=str(device),
            amp=args.amp,
            compile=args.compile,
        )
        runners[name] = setup_trial(config, device, dataset=shape)
    xd, yd = runners["sgd"].prepare(x, y)

    for runner in runners.values():
        _block(runner, xd, yd, max(1, warmup))
    times: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    cpu_times: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    paired: list[float] = []
    paired_cpu: list[float] = []
    for r in range(rounds):
        order = OPTIMIZERS if r % 2 == 0 else OPTIMIZERS[::-1]
        this_round = {name: _block(runners[name], xd, yd, steps) for name in order}
        for name, (wall, cpu) in this_round.items():
            times[name].append(wall)
            cpu_times[name].append(cpu)
        paired.append(this_round["insgd"][0] / this_round["sgd"][0])
        paired_cpu.append(this_round["insgd"][1] / this_round["sgd"][1])

    result: dict[str, Any] = {
        "benchmark": "optimizer_overhead",
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "model": model,
        "batch_size": batch,
        "amp_bf16": use_amp(runners["sgd"].config, device),
        "channels_last": runners["sgd"].channels_last,
        "compile": args.compile,
        "insgd": {
            "norm": args.norm,
            "granularity": args.granularity,
            "normalizer": args.normalizer,
        },
        "rounds": rounds,
        "steps_per_block": steps,
        "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "min_ms": {name: 1e3 * min(t) for name, t in times.items()},
        "ratio_paired_median": statistics.median(paired),
        "ratio_of_medians": statistics.median(times["insgd"]) / statistics.median(times["sgd"]),
    }
    if device.type == "cpu":
        result["cpu_time_median_ms"] = {
            name: 1e3 * statistics.median(t) for name, t in cpu_times.items()
        }
        result["cpu_time_ratio_paired_median"] = statistics.median(paired_cpu)
    if args.breakdown:
        result["breakdown"] = {
            name: _breakdown(runners[name], xd, yd, max(3, steps)) for name in OPTIMIZERS
        }
    if args.profile:
        result["profile"] = _profile(runners["insgd"], xd, yd, args.profile)
    for runner in runners.values():
        runner.close()
    return result


def _profile(runner: EpochRunner, x: torch.Tensor, y: torch.Tensor, steps: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if runner.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            runner.train_step(x, y)
        _sync(runner.device)
    key = "self_cuda_time_total" if runner.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=20)


def print_table(result: dict[str, Any]) -> None:
    print(
        f"optimizer overhead: {result['model']}, batch {result['batch_size']}, "
        f"{result['device']}, {result['threads']} thread(s), bf16={result['amp_bf16']}, "
        f"{result['rounds']} A/B rounds x {result['steps_per_block']} iterations"
    )
    cpu = result.get("cpu_time_median_ms")
    print(
        f"{'optimizer':<10} {'median ms/iter':>15} {'min ms/iter':>12}"
        + (f" {'CPU ms/iter':>12}" if cpu else "")
    )
    for name in OPTIMIZERS:
        print(
            f"{name:<10} {result['median_ms'][name]:>15.2f} {result['min_ms'][name]:>12.2f}"
            + (f" {cpu[name]:>12.2f}" if cpu else "")
        )
    print(
        f"INSGD / SGD: {result['ratio_paired_median']:.3f} (median of paired rounds), "
        f"{result['ratio_of_medians']:.3f} (ratio of medians); target <= 1.05"
    )
    if cpu:
        print(
            f"INSGD / SGD in process CPU time: {result['cpu_time_ratio_paired_median']:.3f} "
            "(median of paired rounds)"
        )
    for name, parts in result.get("breakdown", {}).items():
        print(
            f"  {name:<6} forward+backward {parts['forward_backward_ms']:8.2f} ms   "
            f"step {parts['step_ms']:7.2f} ms"
        )
    if "profile" in result:
        print(result["profile"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except ValueError as exc:
        print(f"optimizer_overhead: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
