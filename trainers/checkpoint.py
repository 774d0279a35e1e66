"""Checkpoints of a trial between epochs: written atomically, restored exactly.

A checkpoint holds everything the next epoch depends on: model weights and buffers, the
optimizer state (momentum buffers, and INSGD's input-power averages P), the epoch (which
fixes the lr: schedules are pure functions of the epoch, see `trainers.schedules`), the
random number generator states (torch CPU, every CUDA device, and the generator that orders
the data) and the metric history so far. Restored on the same CPU, training continues
bit-for-bit as if it had never stopped.

Writes go to a temporary file in the same directory followed by `os.replace`, so a trial
killed mid-write (a preempted Ray worker) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainers.config import TrainConfig

CHECKPOINT_FORMAT = 1

# Fields that may differ between the run that wrote a checkpoint and the run resuming it:
# where the trial runs and where its data lives, not what it computes.
RESUME_MAY_DIFFER: frozenset[str] = frozenset({"device", "data_dir", "download", "compile"})


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Reject a checkpoint path that can never be written, before any training starts."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"checkpoint path {str(target)!r} is a directory; name a file")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"checkpoint path {str(target)!r}: {str(parent)!r} is a file")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"checkpoint directory {str(parent)!r} is not writable")
            break
    return target


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temporary file, fsync, `os.replace`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(
    path: str | os.PathLike[str], config: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """Read a checkpoint for `config` on `device`; a missing, foreign or mismatched file raises.

    Tensors are loaded onto the CPU (RNG states must live there); `load_state_dict` moves
    weights and optimizer state onto the training device.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint {str(source)!r} not found")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise ValueError(f"{str(source)!r} is not a readable training checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(source)!r} is not a training checkpoint of format {CHECKPOINT_FORMAT}"
        )
    details = config_differences(payload["config"], config)
    if details:
        raise ValueError(
            f"checkpoint {str(source)!r} was written for another configuration: {details}"
        )
    check_device_type(payload, source, device)
    return payload


def config_differences(saved: dict[str, Any], config: TrainConfig) -> str:
    """The fields that a resume must not change and that `config` changed since `saved`
    (a checkpoint's stored config), as "key=old (now new)", or "" when there are none.
    Shared by single and fused checkpoints, so both refuse exactly the same changes."""
    current = config.to_dict()
    differ = sorted(
        key for key in current if key not in RESUME_MAY_DIFFER and saved.get(key) != current[key]
    )
    return ", ".join(f"{k}={saved.get(k)!r} (now {current[k]!r})" for k in differ)


def check_device_type(payload: dict[str, Any], source: Path, device: torch.device) -> None:
    """Refuse a checkpoint written on another device type: its random streams differ."""
    saved_type = payload["rng"]["device_type"]
    if saved_type != device.type:
        raise ValueError(
            f"checkpoint {str(source)!r} was written on {saved_type}, cannot resume it on "
            f"{device.type}: the random streams differ between device types"
        )


def capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The states of every random stream a training epoch draws from."""
    state: dict[str, Any] = {
        "device_type": device.type,
        "torch": torch.get_rng_state(),
        "data": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Put every random stream back where `capture_rng` found it (same device type)."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if device.type == "cuda":
        for index, cuda_state in enumerate(state.get("cuda", [])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
