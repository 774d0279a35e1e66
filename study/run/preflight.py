"""Checks a launch runs before it writes anything or starts Ray, beyond `StudyConfig`'s.

`StudyConfig` validates values; these look at the machine: the `--results-dir` folder
Tune will write to, and whether the local Ray a launch is about to start can hold one
trial at all (`--gpus-per-trial 1` on a machine without a GPU would otherwise start Ray
only to be refused there). Each raises UsageError: one line, exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from study.config import StudyConfig
from study.errors import UsageError


def check_results_dir(results_dir: str | None) -> None:
    """`--results-dir` must be a folder Tune can write, or one it can create.

    A URI (`s3://...`, `gs://...`) is Tune's to check: it is left alone.
    """
    if not results_dir or "://" in results_dir:
        return
    path = Path(results_dir).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise UsageError(f"--results-dir {results_dir!r} is a file, not a folder")
    if not existing.is_dir():
        raise UsageError(
            f"--results-dir {results_dir!r} cannot be created: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise UsageError(f"--results-dir {results_dir!r} {what} (permission denied)")


def check_local_resources(config: StudyConfig) -> None:
    """Refuse a trial that the local Ray a launch starts could never schedule.

    Only when the launch starts its own Ray (no `--address`, no `$RAY_ADDRESS`, Ray not
    already initialised): that Ray gets this machine's CPUs and GPUs, so both are known
    before it starts. The counts here are upper bounds of Ray's own (which may subtract
    a cgroup quota), so nothing Ray would accept is refused; the launch checks Ray's real
    resources again once it is up.
    """
    if config.address or os.environ.get("RAY_ADDRESS"):
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return
    cpus = os.cpu_count() or 1
    gpus = local_gpu_count() if config.gpus_per_trial > 0 else 0
    if config.cpus_per_trial > cpus or config.gpus_per_trial > gpus:
        raise UsageError(
            f"a trial needs {config.cpus_per_trial:g} CPU and {config.gpus_per_trial:g} GPU "
            f"(--cpus-per-trial / --gpus-per-trial) but this machine, where the launch "
            f"starts its own Ray, has {cpus} CPU and {gpus} GPU; lower them, or join a "
            f"cluster with --address"
        )


def local_gpu_count() -> int:
    """The GPUs a local Ray would see: Ray's own detection (CUDA_VISIBLE_DEVICES, else
    NVML), else torch's count."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        return int(manager.get_current_node_num_accelerators())
    except Exception:  # noqa: BLE001 - a private Ray API: fall back to torch
        import torch

        return torch.cuda.device_count()
