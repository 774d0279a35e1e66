"""Time a full training iteration with INSGD against torch.optim.SGD(foreach=True).

INSGD's cost over SGD is the hook's reduction of each layer's input plus a few
foreach kernels in `step()`; the target is a full iteration within 1.05x of
SGD. Synthetic data on the device, so only the model and the optimizer are timed:

    python -m trainers.insgd_bench --model resnet20 --batch-size 128 --device cuda

Rounds alternate between the optimizers so that drift of a shared machine
hits all of them alike; the median round is reported. On CUDA it times wall
clock with bf16 autocast and channels_last, as `trainers.train` does; on CPU
it times this process's CPU time, which other jobs on the machine disturb far
less than the wall clock (use `--threads 1` on a busy machine).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from trainers.input_energy import raw_norm
from trainers.insgd import INSGD
from trainers.models import build_model


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"insgd_bench: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m trainers.insgd_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--norm", choices=("l1", "l2"), default="l2", help="INSGD's input norm")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    for name in ("batch_size", "image_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    spec = args.device
    try:
        args.device = torch.device(spec)
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as exc:
        parser.error(f"unusable --device {spec!r}: {str(exc).splitlines()[0]}")
    return args


def _runner(
    model: nn.Module, opt: torch.optim.Optimizer, args: argparse.Namespace
) -> Callable[[int], float]:
    """A function that runs n iterations and returns the seconds they took."""
    cuda = args.device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(args.device, memory_format=fmt)
    fwd = torch.compile(model) if args.compile else model
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)

    clock = time.perf_counter if cuda else time.process_time

    def run(n: int) -> float:
        if cuda:
            torch.cuda.synchronize(args.device)
        start = clock()
        for _ in range(n):
            with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = nn.functional.cross_entropy(fwd(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize(args.device)
        return clock() - start

    return run


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _bench(args)
    finally:
        torch.set_num_threads(threads)


def _bench(args: argparse.Namespace) -> int:
    try:
        base = build_model(args.model, in_channels=3, image_size=args.image_size, num_classes=10)
    except ValueError as exc:
        print(f"insgd_bench: error: {exc}", file=sys.stderr)
        return 2
    hp = {"momentum": 0.9, "weight_decay": 5e-4, "foreach": True}
    models = {name: copy.deepcopy(base) for name in ("sgd", "insgd-layer", "insgd-channel")}
    opts: dict[str, torch.optim.Optimizer] = {
        "sgd": torch.optim.SGD(models["sgd"].parameters(), 0.1, **hp)
    }
    for gran in ("layer", "channel"):
        name = f"insgd-{gran}"
        opts[name] = INSGD(models[name], 0.1, norm=args.norm, granularity=gran, **hp)
    runners = {name: _runner(models[name], opts[name], args) for name in models}
    for run in runners.values():  # warm-up: allocator, cuDNN autotuning, compilation
        run(3)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            times[name].append(run(args.steps) / args.steps)
    cuda = args.device.type == "cuda"
    device = torch.cuda.get_device_name(args.device) if cuda else "cpu"
    print(
        f"{args.model}, batch {args.batch_size}, norm {args.norm}, {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"compile={args.compile}, {'wall' if cuda else 'process CPU'} time"
    )
    sgd = statistics.median(times["sgd"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14s} {med * 1e3:8.2f} ms/iter  x{med / sgd:.3f} vs sgd")
    for gran in ("layer", "channel"):
        cost = _energy_cost(copy.deepcopy(base), gran, args)
        print(f"  input-energy reductions alone ({gran}): {cost * 1e3:.2f} ms/iter")
    return 0


def _energy_cost(model: nn.Module, granularity: str, args: argparse.Namespace) -> float:
    """Seconds per iteration spent in the hooks' reductions, timed on their own.

    INSGD's main extra work per forward, measured in a short repeatable loop
    on the inputs of a freshly initialized model: steadier on a shared machine
    than the difference of two full iterations.
    """
    cuda = args.device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(args.device, memory_format=fmt)
    opt = INSGD(model, 0.1, norm=args.norm, granularity=granularity)
    opt.remove_hooks()
    sites = list(opt._sites.values())
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[site.name].register_forward_pre_hook(
            lambda m, a, name=site.name: inputs.__setitem__(name, a[0].detach())
        )
        for site in sites
    ]
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    with torch.no_grad(), torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=cuda):
        model(x.contiguous(memory_format=fmt))
    for handle in handles:
        handle.remove()

    def reduce_all() -> None:
        for site in sites:
            raw_norm(
                inputs[site.name],
                p=site.p,
                is_conv=site.is_conv,
                spatial_dims=site.weight.dim() - 2,
                per_channel=site.per_channel,
            )

    clock = time.perf_counter if cuda else time.process_time
    reduce_all()
    samples = []
    for _ in range(args.rounds):
        if cuda:
            torch.cuda.synchronize(args.device)
        start = clock()
        for _ in range(args.steps):
            reduce_all()
        if cuda:
            torch.cuda.synchronize(args.device)
        samples.append((clock() - start) / args.steps)
    return statistics.median(samples)


if __name__ == "__main__":
    raise SystemExit(main())
