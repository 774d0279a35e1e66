"""Which device a trial runs on, what it is called, and the precision settings that follow.

Kept apart from the loop so the command line can reject a bad ``--device`` (``cuda`` on a
machine without a GPU, ``cuda:3`` on a one-GPU box, a typo) before any data is loaded.
"""

from __future__ import annotations

import platform
from functools import lru_cache

import torch

from trainers.config import TrainConfig


def resolve_device(config: TrainConfig) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unusable device raises ValueError."""
    spec = config.device.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(
            f"device must be auto, cpu, cuda or cuda:N; got {config.device!r}"
        ) from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {config.device!r} requested but CUDA is not available on this machine"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {config.device!r} does not exist: {count} GPU(s) visible")
        return torch.device(
            "cuda", torch.cuda.current_device() if device.index is None else device.index
        )
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {config.device!r} requested but MPS is not available")
        return device
    raise ValueError(f"unsupported device {config.device!r}: use auto, cpu, cuda or cuda:N")


#: bf16 tensor cores, and cuDNN's bf16 convolutions, start with compute capability 8.0
#: (A100, RTX 30xx, H100); a V100 (7.0) or T4 (7.5) would emulate them, slower than fp32.
BF16_MIN_CAPABILITY = (8, 0)


def use_amp(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast. By default on for a CUDA GPU of compute capability 8.0 or newer
    (bf16 tensor cores); off (fp32) on older GPUs such as V100 and T4, whose cuDNN has no
    bf16 convolutions, on CPU (slow there) and on MPS. ``amp=True`` forces it on."""
    if config.amp is not None:
        return bool(config.amp)
    if device.type != "cuda":
        return False
    return tuple(torch.cuda.get_device_capability(device)) >= BF16_MIN_CAPABILITY


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """NHWC memory layout: on by default on CUDA (what cuDNN's fast convolutions want)."""
    return device.type == "cuda" if config.channels_last is None else bool(config.channels_last)


def device_name(device: torch.device) -> str:
    """A human-readable name for the results database, e.g. ``NVIDIA H100 80GB HBM3``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({_cpu_model()})"
    return device.type


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
