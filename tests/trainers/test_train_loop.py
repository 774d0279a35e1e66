"""The training loop of one trial: metrics per epoch, determinism on CPU, divergence."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import trainers
from trainers import EpochMetrics, TrainConfig, train
from trainers.train import resolve_device, setup_trial

TIMING = ("epoch_seconds", "images_per_second")


# Tiny models on a shared 2-core box: a second OpenMP thread only spins.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=128, device="cpu")


def _without_timing(rows: list[EpochMetrics]) -> list[dict]:
    return [{k: v for k, v in row.to_dict().items() if k not in TIMING} for row in rows]


def test_on_epoch_gets_every_epoch_once_with_its_metrics() -> None:
    seen: list[EpochMetrics] = []
    result = train(replace(TINY, epochs=3), on_epoch=seen.append)

    assert [m.epoch for m in seen] == [1, 2, 3]
    assert result.epochs == seen
    for m in seen:
        assert 0.0 <= m.train_accuracy <= 1.0 and 0.0 <= m.val_accuracy <= 1.0
        assert math.isfinite(m.train_loss) and math.isfinite(m.val_loss)
        assert m.lr == 0.1
        assert m.epoch_seconds > 0 and m.images_per_second > 0
        assert not m.diverged
    assert seen[-1].train_loss < seen[0].train_loss  # it learns
    assert result.final_val_accuracy == seen[-1].val_accuracy > 0.5
    assert result.best_val_accuracy == max(m.val_accuracy for m in seen)
    assert result.final_train_loss == seen[-1].train_loss
    assert result.epochs_completed == 3 and not result.diverged
    assert result.device_name.startswith("cpu")
    assert result.wall_seconds >= sum(m.epoch_seconds for m in seen)


def test_same_seed_gives_identical_metrics_on_cpu() -> None:
    # Augmentation makes the data generator draw crops and flips as well as the order.
    config = replace(TINY, augment=True, optimizer="insgd")
    first = train(config)
    again = train(config)
    other = train(replace(config, seed=1))
    assert _without_timing(first.epochs) == _without_timing(again.epochs)
    assert _without_timing(first.epochs) != _without_timing(other.epochs)


def test_reported_lr_follows_schedule_and_per_step_warmup() -> None:
    warm = train(replace(TINY, epochs=3, warmup_epochs=2, lr=0.2, optimizer="sgd"))
    assert [m.lr for m in warm.epochs] == pytest.approx([0.1, 0.2, 0.2])
    steps = train(replace(TINY, epochs=5, schedule="multistep", optimizer="sgd"))
    assert [m.lr for m in steps.epochs] == pytest.approx([0.1, 0.1, 0.02, 0.004, 0.0008])


def test_huge_lr_diverges_as_a_result_not_an_exception() -> None:
    seen: list[EpochMetrics] = []
    result = train(replace(TINY, optimizer="sgd", lr=1e4, epochs=3), on_epoch=seen.append)
    assert result.diverged
    assert result.epochs_completed == len(seen) < 3  # stopped early
    last = seen[-1]
    assert last.diverged and not any(m.diverged for m in seen[:-1])
    assert not math.isfinite(last.train_loss)
    assert result.final_val_accuracy == last.val_accuracy
    assert last.val_accuracy == 0.0 and math.isnan(last.val_loss)  # NaN weights: no guessing


def test_loss_above_factor_times_ln_classes_counts_as_diverged_and_is_evaluated() -> None:
    # ln(10) * 0.01 = 0.023: any first-epoch loss exceeds it, yet the weights are finite.
    result = train(replace(TINY, epochs=3, divergence_factor=0.01))
    assert result.diverged and result.epochs_completed == 1
    only = result.epochs[0]
    assert only.diverged and math.isfinite(only.train_loss) and only.train_loss > 0.023
    assert math.isfinite(only.val_loss) and only.val_accuracy > 0.1  # evaluated normally


def test_evaluation_of_nan_weights_neither_crashes_nor_counts_hits() -> None:
    runner = setup_trial(replace(TINY, model="toy-cnn"))
    model = runner.model
    loss, accuracy = runner.evaluate()
    assert math.isfinite(loss) and 0.0 < accuracy < 1.0
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    loss, accuracy = runner.evaluate()
    assert math.isnan(loss) and accuracy == 0.0
    runner.close()


@pytest.mark.parametrize("device", ["cuda:99", "gpu", "tpu:0"])
def test_unusable_device_is_a_value_error(device: str) -> None:
    with pytest.raises(ValueError, match="device"):
        resolve_device(replace(TINY, device=device))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_rejected_before_training() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(replace(TINY, device="cuda"))


def test_auto_device_is_cuda_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(replace(TINY, device="auto")).type == expected


@pytest.mark.parametrize(("field", "value"), [("model", "resnet7"), ("dataset", "mnist-9")])
def test_unknown_model_or_dataset_is_a_value_error(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=value):
        train(replace(TINY, **{field: value}))


def test_package_import_is_light_and_train_is_callable_either_way() -> None:
    code = (
        "import sys, trainers; assert 'torch' not in sys.modules, 'torch imported'; "
        "from trainers import TrainConfig; TrainConfig(lr=0.5)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import trainers.train as module

    assert trainers.train is module and callable(module) and callable(module.train)


class _FakeEvent:
    """Stands in for torch.cuda.Event: remembers the stream it was recorded on."""

    recorded: list[object] = []

    def record(self, stream: object = None) -> None:
        _FakeEvent.recorded.append(stream)

    def query(self) -> bool:
        return True


def test_non_finite_watch_records_its_event_on_the_trial_devices_stream(monkeypatch) -> None:
    """With --device cuda:1 the flag's copy is queued on GPU 1's stream: an event on the
    current device's (GPU 0's) stream would complete before the copy did. CUDA calls are
    stood in for (no GPU here); the flag itself is a plain CPU tensor."""
    from trainers.train import _NonFiniteWatch

    real_zeros = torch.zeros
    monkeypatch.setattr(
        torch, "zeros", lambda *a, pin_memory=False, **k: real_zeros(*a, **k)
    )  # no pinned memory without CUDA
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", device))
    _FakeEvent.recorded = []
    device = torch.device("cuda", 1)
    watch = _NonFiniteWatch(device, interval=4)
    assert not watch.tripped(0, torch.tensor(1.0))  # queues the check of step 0
    assert _FakeEvent.recorded == [("stream of", device)]
    assert not watch.tripped(1, torch.tensor(float("nan")))  # the event of step 0: finite
    assert not watch.tripped(4, torch.tensor(float("nan")))  # queues the check of step 4
    assert watch.tripped(5, torch.tensor(float("nan")))  # ... which saw the NaN
    assert _FakeEvent.recorded == [("stream of", device)] * 2


@pytest.mark.parametrize(
    ("capability", "amp"),
    [((7, 0), False), ((7, 5), False), ((8, 0), True), ((8, 9), True), ((9, 0), True)],
)
def test_bf16_autocast_by_default_only_from_compute_capability_8(
    monkeypatch, capability, amp
) -> None:
    """V100 (7.0) and T4 (7.5) have no bf16 convolutions in cuDNN: fp32 there by default."""
    from trainers.device import use_amp

    asked: list[object] = []

    def get_device_capability(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    device = torch.device("cuda", 1)
    assert use_amp(TrainConfig(), device) is amp
    assert asked == [device]  # the trial's GPU, not the current one
    assert use_amp(TrainConfig(amp=True), device) is True  # asked for: on anyway
    assert use_amp(TrainConfig(amp=False), device) is False
    assert use_amp(TrainConfig(), torch.device("cpu")) is False
