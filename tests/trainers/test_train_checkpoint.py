"""Checkpoints: written atomically before `on_epoch`, and a resumed trial is bit-identical."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trainers import EpochMetrics, TrainConfig, train

# toy-cnn has dropout and augmentation is on: every random stream (torch CPU for init and
# dropout, the data generator for order, crops and flips) matters to the result.
CONFIG = TrainConfig(
    dataset="digits",
    model="toy-cnn",
    optimizer="insgd",
    augment=True,
    epochs=3,
    batch_size=256,
    schedule="cosine",
    device="cpu",
)
TIMING = ("epoch_seconds", "images_per_second")


# Tiny models on a shared 2-core box: a second OpenMP thread only spins.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupted(Exception):
    """Stands in for a killed worker."""


def _without_timing(rows: list[EpochMetrics]) -> list[dict]:
    return [{k: v for k, v in row.to_dict().items() if k not in TIMING} for row in rows]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_tensors(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_tensors(x, y)
    else:
        assert a == b


def test_resumed_trial_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    full_path, cut_path = tmp_path / "full.pt", tmp_path / "cut.pt"
    full = train(CONFIG, checkpoint_path=full_path)

    def stop_after_first(metrics: EpochMetrics) -> None:
        if metrics.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(CONFIG, stop_after_first, checkpoint_path=cut_path)
    assert _load(cut_path)["epoch"] == 1

    seen: list[EpochMetrics] = []
    resumed = train(CONFIG, seen.append, checkpoint_path=cut_path, resume_from=cut_path)

    assert [m.epoch for m in seen] == [2, 3]  # only the epochs it trained
    assert _without_timing(resumed.epochs) == _without_timing(full.epochs)
    assert resumed.final_val_accuracy == full.final_val_accuracy
    end_full, end_resumed = _load(full_path), _load(cut_path)
    assert end_resumed["epoch"] == 3
    _assert_same_tensors(end_full["model"], end_resumed["model"])
    _assert_same_tensors(end_full["optimizer"], end_resumed["optimizer"])  # momentum and P
    assert any("input_power" in s for s in end_full["optimizer"]["state"].values())


def test_checkpoint_is_written_before_on_epoch_and_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trial.pt"
    epochs_on_disk: list[int] = []
    config = replace(CONFIG, model="mlp", epochs=2)
    train(config, lambda m: epochs_on_disk.append(_load(path)["epoch"]), checkpoint_path=path)
    assert epochs_on_disk == [1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["trial.pt"]  # no temp files left


def test_checkpoint_last_false_skips_only_the_trials_last_epoch(tmp_path: Path) -> None:
    """What a Tune trial asks for: every epoch a restart could resume from, not the last."""
    path = tmp_path / "trial.pt"
    config = replace(CONFIG, model="mlp", epochs=2)
    epochs_on_disk: list[int] = []
    train(
        config,
        lambda m: epochs_on_disk.append(_load(path)["epoch"]),
        checkpoint_path=path,
        checkpoint_last=False,
    )
    assert epochs_on_disk == [1, 1]  # epoch 2 ended the trial: epoch 1's file is kept
    single = tmp_path / "single.pt"
    train(replace(config, epochs=1), checkpoint_path=single, checkpoint_last=False)
    assert not single.exists()
    diverging = tmp_path / "diverged.pt"
    result = train(
        replace(config, epochs=3, lr=1e4), checkpoint_path=diverging, checkpoint_last=False
    )
    assert result.diverged and result.epochs_completed == 1 and not diverging.exists()


def test_resuming_a_finished_trial_returns_its_result_without_training(tmp_path: Path) -> None:
    path = tmp_path / "done.pt"
    config = replace(CONFIG, model="mlp", epochs=1)
    first = train(config, checkpoint_path=path)
    calls: list[EpochMetrics] = []
    again = train(config, calls.append, resume_from=path)
    assert calls == [] and again.epochs == first.epochs


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    path = tmp_path / "trial.pt"
    config = replace(CONFIG, model="mlp", epochs=1)
    train(config, checkpoint_path=path)
    with pytest.raises(ValueError, match="lr=0.1 \\(now 0.2\\)"):
        train(replace(config, lr=0.2), resume_from=path)


def test_resume_from_missing_or_foreign_file_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        train(CONFIG, resume_from=tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        train(CONFIG, resume_from=foreign)
    torch.save({"some": "dict"}, foreign)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        train(CONFIG, resume_from=foreign)


def test_checkpoint_path_that_is_a_directory_is_rejected_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        train(CONFIG, checkpoint_path=tmp_path)
