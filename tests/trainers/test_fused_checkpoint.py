"""Bundle checkpoints hold every member; a resumed bundle reproduces the uninterrupted run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trainers import EpochMetrics, TrainConfig
from trainers.fused import train_fused

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING = ("epoch_seconds", "images_per_second")

# toy-cnn with dropout and crop+flip: every random stream of every member (data order,
# crops, flips, dropout masks) matters; the lr-20 member diverges in epoch 1, so the
# resumed bundle must also keep a finished member finished.
BASE = TrainConfig(
    dataset="synthetic",
    dataset_options={"shape": (3, 8, 8), "num_train": 256, "num_val": 64},
    model="toy-cnn",
    augment=True,
    epochs=3,
    batch_size=64,
    schedule="cosine",
    device="cpu",
)
CONFIGS = [
    replace(BASE, optimizer="insgd", norm="l2", lr=0.05, seed=1),
    replace(BASE, optimizer="sgd", lr=20.0, seed=2),
    replace(BASE, optimizer="insgd", norm="l1", lr=0.1, beta=0.5, seed=3),
]


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
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_tensors(x, y)
    else:
        assert a == b


def test_resumed_bundle_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    full_path, cut_path = tmp_path / "full.pt", tmp_path / "cut.pt"
    full = train_fused(CONFIGS, checkpoint_path=full_path)
    assert full[1].diverged and full[1].epochs_completed == 1  # the wild one, for real

    def stop_after_second(member: int, metrics: EpochMetrics) -> None:
        if metrics.epoch == 2 and member == len(CONFIGS) - 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_fused(CONFIGS, stop_after_second, checkpoint_path=cut_path)
    cut = _load(cut_path)
    assert cut["epoch"] == 2 and cut["kind"] == "fused"
    assert [len(h) for h in cut["histories"]] == [2, 1, 2]
    assert len(cut["rng"]["data"]) == len(cut["rng"]["dropout"]) == len(CONFIGS)

    seen: list[tuple[int, int]] = []
    resumed = train_fused(
        CONFIGS,
        lambda member, m: seen.append((member, m.epoch)),
        checkpoint_path=cut_path,
        resume_from=cut_path,
    )

    assert seen == [(0, 3), (2, 3)]  # only what it trained; the diverged member stays done
    for a, b in zip(resumed, full, strict=True):
        assert _without_timing(a.epochs) == _without_timing(b.epochs)
        assert (a.diverged, a.final_val_accuracy) == (b.diverged, b.final_val_accuracy)
    end_full, end_resumed = _load(full_path), _load(cut_path)
    assert end_resumed["epoch"] == 3
    _assert_same_tensors(end_full["model"], end_resumed["model"])
    _assert_same_tensors(end_full["optimizer"], end_resumed["optimizer"])  # momentum and P
    _assert_same_tensors(end_full["rng"], end_resumed["rng"])


def test_checkpoint_holds_every_member_and_refuses_other_configs(tmp_path: Path) -> None:
    configs = [replace(c, epochs=1, model="mlp") for c in CONFIGS]
    path = tmp_path / "bundle.pt"
    train_fused(configs, checkpoint_path=path)
    payload = _load(path)
    assert payload["configs"] == [c.to_dict() for c in configs]
    assert payload["model"]["net.net.1.weight"].shape[0] == len(configs)  # (K, out, in)
    assert payload["optimizer"]["input_power"].shape[0] == len(configs)

    with pytest.raises(ValueError, match="another configuration of member 1"):
        train_fused([configs[0], replace(configs[1], lr=0.5), configs[2]], resume_from=path)
    with pytest.raises(ValueError, match="holds 3 members, not 2"):
        train_fused(configs[:2], resume_from=path)
    with pytest.raises(FileNotFoundError):
        train_fused(configs, resume_from=tmp_path / "missing.pt")


def test_checkpoint_last_false_skips_the_final_epoch(tmp_path: Path) -> None:
    configs = [replace(c, epochs=2, model="mlp") for c in CONFIGS[::2]]
    path = tmp_path / "bundle.pt"
    train_fused(configs, checkpoint_path=path, checkpoint_last=False)
    assert _load(path)["epoch"] == 1
