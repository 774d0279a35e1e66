"""The Ray Tune trainable: a plain function of a trial's config that trains and reports.

Everything a trial needs is its Tune config (its variant, lr, eps and seed) and the study's
`TrialTemplates` (`study.run.trial_config`: the rest of its `TrainConfig`), which `bind`
pickles once with the function instead of into every trial's config. So this module
holds no study logic: it picks the device, restores the last per-epoch checkpoint if
Tune restarted the trial after a worker died, and hands every epoch to `tune.report`
with that epoch's checkpoint, except the trial's last (its final or diverged epoch): a
finished trial is never resumed.
A worker that dies after that report but before Tune sees the trial end restarts it from
the epoch before, and the last epoch runs again.
Workers never touch the database; the driver records what they report
(`study.run.recorder`). Each report carries where the trial ran (Ray node id, hostname,
device) and the epoch it resumed from, so the driver can tell a restart from a resume.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.run.trial_config import TrialTemplates
    from trainers.config import TrainConfig

CHECKPOINT_FILE = "trial.pt"
EPOCH_FILE = "epoch.txt"  # beside the checkpoint, so a resume knows its epoch without loading it


class GpuAssignmentError(RuntimeError):
    """The GPU Ray assigned to a trial is not the one its process sees as `cuda:0`."""


def pick_device() -> str:
    """CUDA only when Ray assigned this trial a GPU *and* torch can see one.

    "auto" would grab a GPU that Ray gave to another trial; a fake GPU resource
    (``ray start --num-gpus 1`` on a CPU machine) must still train on the CPU. The trial
    trains on ``cuda`` (device 0), which is the assigned GPU only because Ray sets
    CUDA_VISIBLE_DEVICES to it: `check_gpu_assignment` makes sure it did.
    """
    import ray
    import torch

    gpu_ids = ray.get_gpu_ids()
    if gpu_ids and torch.cuda.is_available():
        check_gpu_assignment(
            gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count()
        )
        return "cuda"
    return "cpu"


def check_gpu_assignment(gpu_ids: Sequence[Any], visible: str | None, device_count: int) -> None:
    """Raise GpuAssignmentError (the trial fails with this message) unless device 0 of this
    process is the GPU Ray assigned: CUDA_VISIBLE_DEVICES must list exactly Ray's GPU ids,
    in order, and torch must see that many devices.

    They disagree when Ray was told not to set the variable
    (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES), when something in the worker changed
    it, or when CUDA was initialised before Ray set it: then device 0 may be a GPU that
    another trial is using.
    """
    assigned = [str(i).strip() for i in gpu_ids]
    shown = ",".join(assigned)
    if visible is None:
        raise GpuAssignmentError(
            f"Ray assigned GPU {shown} to this trial but CUDA_VISIBLE_DEVICES is not set, so "
            f"cuda:0 is the machine's first GPU, not necessarily the assigned one (unset "
            f"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES on the Ray nodes)"
        )
    listed = [part.strip() for part in visible.split(",") if part.strip()]
    if listed != assigned:
        raise GpuAssignmentError(
            f"Ray assigned GPU {shown} to this trial but CUDA_VISIBLE_DEVICES is "
            f"{visible!r}: cuda:0 would not be the assigned GPU"
        )
    if device_count != len(assigned):
        raise GpuAssignmentError(
            f"Ray assigned GPU {shown} to this trial (CUDA_VISIBLE_DEVICES={visible!r}) but "
            f"torch sees {device_count} GPU(s): CUDA was initialised before Ray set the "
            f"variable, so cuda:0 may be another trial's GPU"
        )


def _set_threads() -> None:
    """One intra-op thread pool per trial sized to its CPUs, so packed trials don't thrash."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def where() -> dict[str, Any]:
    """The Ray node and host running this trial."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}


def bind(
    trial: Callable[[dict[str, Any], TrialTemplates], None], templates: TrialTemplates
) -> Callable[[dict[str, Any]], None]:
    """The function Tune runs: `trial` (`run_trial`) with the study's templates bound.

    A closure, which Ray pickles by value once, with the trainable, for every worker
    (`tune.with_parameters` would instead fetch them from the object store at every
    trial's start). It keeps the name `run_trial`, which Tune names trials after."""

    def run_trial_with_templates(config: dict[str, Any]) -> None:
        trial(config, templates)

    run_trial_with_templates.__name__ = "run_trial"
    return run_trial_with_templates


def run_trial(config: dict[str, Any], templates: TrialTemplates) -> None:
    """Train one trial, reporting each epoch (with its checkpoint) to Ray Tune."""
    import torch
    from ray import tune

    from trainers.device import device_name
    from trainers.train import is_last_epoch, train

    device = pick_device()
    _set_threads()
    train_config = templates.train_config(config, device)
    static = {**where(), "device_name": device_name(torch.device(device))}
    checkpoint = tune.get_checkpoint()
    if not needs_workdir(train_config, checkpoint):
        # one epoch, not resumed: its only epoch is its last, which is never checkpointed
        static["resumed_from_epoch"] = 0
        train(train_config, lambda metrics: tune.report({**metrics.to_dict(), **static}))
        return
    workdir = Path(tempfile.mkdtemp(prefix="insgd-trial-"))
    try:
        checkpoint_path = workdir / CHECKPOINT_FILE
        resume_from = _restore_checkpoint(checkpoint, checkpoint_path)
        static["resumed_from_epoch"] = _checkpoint_epoch(workdir) if resume_from else 0

        def report(metrics: Any) -> None:
            if is_last_epoch(train_config, metrics):
                # no checkpoint (the trainer skipped writing it too, `checkpoint_last`;
                # Tune persisting one costs ~20 ms a trial)
                tune.report({**metrics.to_dict(), **static})
                return
            (workdir / EPOCH_FILE).write_text(str(metrics.epoch), encoding="utf-8")
            tune.report(
                {**metrics.to_dict(), **static},
                checkpoint=tune.Checkpoint.from_directory(str(workdir)),
            )

        train(
            train_config,
            report,
            checkpoint_path=checkpoint_path,
            resume_from=resume_from,
            checkpoint_last=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def needs_workdir(config: TrainConfig, checkpoint: object | None) -> bool:
    """Whether the trial needs a checkpoint folder: it runs more than one epoch (all but
    its last are checkpointed) or Tune handed it a checkpoint to resume from.

    A one-epoch trial needs none, and making and removing an empty private folder cost
    0.3 ms of every such trial on a reused actor, a quarter of what per-step time stamps
    still showed over bare Ray Tune (docs/performance.md).
    """
    return config.epochs > 1 or checkpoint is not None


def _restore_checkpoint(checkpoint: Any, target: Path) -> Path | None:
    """Copy the latest reported checkpoint (if Tune restored one) to `target`."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        source = Path(folder)
        if not (source / CHECKPOINT_FILE).exists():
            return None
        shutil.copyfile(source / CHECKPOINT_FILE, target)
        if (source / EPOCH_FILE).exists():
            shutil.copyfile(source / EPOCH_FILE, target.parent / EPOCH_FILE)
    return target


def _checkpoint_epoch(workdir: Path) -> int:
    try:
        return int((workdir / EPOCH_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return 0
