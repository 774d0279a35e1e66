"""The trial function itself, run in-process with Ray's session calls stood in for.

What it reports, where its checkpoints live and when it has a checkpoint folder at all:
the Ray-level behaviour (a worker killed mid-trial resumes from its last epoch) is
tested with real Ray in test_study_run.py; these pin the details that test cannot see.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ray import tune

import study.run.trainable as trainable
from study.config import StudyConfig
from study.run.trial_config import TrialTemplates
from trainers import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trial_folders() -> list[Path]:
    """The trials' checkpoint folders in the temp dir (torch keeps its own caches there)."""
    return sorted(Path(tempfile.gettempdir()).glob("insgd-trial-*"))


class Session:
    """Stands in for Tune's: hands out `checkpoint`, keeps every report and a copy of the
    checkpoint folder each one carried (the trial removes its folder when it ends)."""

    def __init__(self, saved: Path, checkpoint: tune.Checkpoint | None = None) -> None:
        self.saved = saved
        self.checkpoint = checkpoint
        self.reports: list[dict[str, Any]] = []
        self.folders: list[Path | None] = []
        self.live_folders: list[list[Path]] = []

    def report(self, metrics: dict[str, Any], *, checkpoint: Any = None) -> None:
        self.reports.append(dict(metrics))
        self.live_folders.append(_trial_folders())
        if checkpoint is None:
            self.folders.append(None)
            return
        copy = self.saved / f"epoch-{metrics['epoch']}"
        shutil.copytree(checkpoint.path, copy)
        self.folders.append(copy)


@pytest.fixture
def session(tmp_path, monkeypatch):
    """Runs `trainable.run_trial` outside Ray: CPU, fixed node, temp files under tmp_path."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(trainable, "pick_device", lambda: "cpu")
    monkeypatch.setattr(trainable, "_set_threads", lambda: None)
    monkeypatch.setattr(trainable, "where", lambda: {"node_id": "node-1", "hostname": "host-1"})
    fake = Session(tmp_path)
    monkeypatch.setattr(tune, "report", fake.report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: fake.checkpoint)
    return fake


def _run(epochs: int) -> None:
    """`run_trial` as a study's trial: its Tune config and the study's templates."""
    study = StudyConfig(dataset="digits", model="mlp", epochs=epochs, batch_size=256)
    config = {"variant": "insgd-l2", "lr": 0.05, "eps": 0.01, "seed": 0}
    trainable.run_trial(config, TrialTemplates.for_study(study))


def test_one_epoch_trial_reports_without_any_checkpoint_folder(session):
    _run(epochs=1)

    assert [r["epoch"] for r in session.reports] == [1]
    report = session.reports[0]
    assert report["node_id"] == "node-1" and report["hostname"] == "host-1"
    assert report["device_name"].startswith("cpu") and report["resumed_from_epoch"] == 0
    assert session.folders == [None]
    assert session.live_folders == [[]]  # no folder was made for it, not even an empty one
    assert _trial_folders() == []


def test_every_epoch_but_the_last_carries_its_checkpoint_and_the_folder_is_removed(session):
    _run(epochs=3)

    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    assert session.folders[2] is None  # the last epoch: nothing resumes a finished trial
    for epoch, folder in zip((1, 2), session.folders, strict=False):
        assert folder is not None
        assert (folder / trainable.EPOCH_FILE).read_text() == str(epoch)
        assert (folder / trainable.CHECKPOINT_FILE).stat().st_size > 0
    assert len(session.live_folders[0]) == 1  # the trial's private folder, while it runs
    assert _trial_folders() == []  # and gone when it ends


def test_a_restarted_trial_resumes_from_the_checkpoint_tune_hands_it(session, monkeypatch):
    _run(epochs=3)
    first_run = [r["val_accuracy"] for r in session.reports]
    epoch_one = session.folders[0]
    assert epoch_one is not None

    restarted = Session(session.saved / "again", tune.Checkpoint.from_directory(epoch_one))
    monkeypatch.setattr(tune, "report", restarted.report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: restarted.checkpoint)
    _run(epochs=3)

    assert [r["epoch"] for r in restarted.reports] == [2, 3]
    assert {r["resumed_from_epoch"] for r in restarted.reports} == {1}
    assert [r["val_accuracy"] for r in restarted.reports] == first_run[1:]
    assert _trial_folders() == []


def test_a_checkpoint_folder_is_made_for_several_epochs_or_a_checkpoint_to_restore():
    """A one-epoch trial handed a checkpoint never happens in a study (its only epoch is
    never checkpointed), but a checkpoint Tune hands over is never ignored."""
    assert trainable.needs_workdir(TrainConfig(epochs=1), object())
    assert not trainable.needs_workdir(TrainConfig(epochs=1), None)
    assert trainable.needs_workdir(TrainConfig(epochs=2), None)


class TestGpuAssignment:
    """The trial trains on `cuda` (device 0): only right when CUDA_VISIBLE_DEVICES is the
    GPU Ray assigned. Ray and CUDA are stood in for (no GPU here)."""

    @pytest.fixture
    def gpu(self, monkeypatch):
        import ray
        import torch

        state = {"ids": [3], "count": 1}
        monkeypatch.setattr(ray, "get_gpu_ids", lambda: state["ids"])
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
        return state

    def test_the_assigned_gpu_is_device_0(self, gpu):
        assert trainable.pick_device() == "cuda"

    @pytest.mark.parametrize(
        ("visible", "count", "needle"),
        [
            (None, 4, "CUDA_VISIBLE_DEVICES is not set"),
            ("2", 1, "CUDA_VISIBLE_DEVICES is '2'"),
            ("0,1,2,3", 4, "CUDA_VISIBLE_DEVICES is '0,1,2,3'"),
            ("3", 4, "torch sees 4 GPU(s)"),
        ],
    )
    def test_a_disagreement_fails_the_trial_with_a_clear_message(
        self, gpu, monkeypatch, visible, count, needle
    ):
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        gpu["count"] = count
        with pytest.raises(trainable.GpuAssignmentError) as info:
            trainable.pick_device()
        assert "Ray assigned GPU 3 to this trial" in str(info.value) and needle in str(info.value)

    def test_a_fake_gpu_resource_trains_on_the_cpu(self, gpu, monkeypatch):
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what Ray sets for no real GPU
        assert trainable.pick_device() == "cpu"

    def test_no_gpu_assigned_trains_on_the_cpu(self, gpu):
        gpu["ids"] = []
        assert trainable.pick_device() == "cpu"

    def test_several_gpus_in_order(self):
        trainable.check_gpu_assignment(["0", "1"], "0, 1", 2)
        with pytest.raises(trainable.GpuAssignmentError):
            trainable.check_gpu_assignment(["0", "1"], "1,0", 2)
