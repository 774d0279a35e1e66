"""A member that diverges stops there, is reported diverged there, and touches no one else.

The divergence rule is `trainers.train`'s (non-finite, or train loss above
divergence_factor * ln C, or non-finite val loss), applied per member; a member whose
running loss goes non-finite stops mid-epoch as a solo trial's loop breaks. The healthy
members beside it must still equal their solo trials exactly (accuracies, lr; losses to
1e-6, see test_fused_equivalence), and the diverged one must report what its solo trial
reports.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from trainers import EpochMetrics, TrainConfig, TrialResult, train
from trainers.fused import fuse_models, train_fused
from trainers.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOSS_REL = 1e-6


def assert_same_trial(fused: TrialResult, solo: TrialResult) -> None:
    assert (fused.epochs_completed, fused.diverged) == (solo.epochs_completed, solo.diverged)
    for a, b in zip(fused.epochs, solo.epochs, strict=True):
        assert (a.epoch, a.lr, a.diverged) == (b.epoch, b.lr, b.diverged)
        assert (a.train_accuracy, a.val_accuracy) == (b.train_accuracy, b.val_accuracy)
        assert a.train_loss == pytest.approx(b.train_loss, rel=LOSS_REL, nan_ok=True)
        assert a.val_loss == pytest.approx(b.val_loss, rel=LOSS_REL, nan_ok=True)


def _run(configs: list[TrainConfig]) -> tuple[list[TrialResult], list[tuple[int, EpochMetrics]]]:
    seen: list[tuple[int, EpochMetrics]] = []
    results = train_fused(configs, on_epoch=lambda m, row: seen.append((m, row)))
    return results, seen


def test_lr10_sgd_member_diverges_alone_beside_lr001_members() -> None:
    # toy-cnn: BatchNorm statistics and dropout streams per member; the lr-10 member
    # blows past 10 * ln(10) in its second epoch and stops there.
    base = TrainConfig(dataset="digits", model="toy-cnn", epochs=3, batch_size=128, device="cpu")
    configs = [
        replace(base, optimizer="sgd", lr=0.01, seed=1),
        replace(base, optimizer="sgd", lr=10.0, seed=2),
        replace(base, optimizer="insgd", norm="l1", lr=0.01, seed=3),
    ]
    fused, seen = _run(configs)
    solo = [train(c) for c in configs]

    wild = fused[1]
    assert wild.diverged and wild.epochs_completed == 2 and wild.epochs[-1].diverged
    assert [m for m, row in seen if row.epoch == 3] == [0, 2]  # no callback once stopped
    for f, s in zip(fused, solo, strict=True):
        assert_same_trial(f, s)
    for index in (0, 2):
        assert not fused[index].diverged and fused[index].epochs_completed == 3


def test_member_whose_loss_turns_nan_stops_mid_epoch_and_stays_apart() -> None:
    # mlp, lr 100: the running loss is NaN within the first epoch; the loop of that member
    # stops at once (as a solo trial's), it is evaluated as NaN weights are (NaN, 0.0).
    base = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=64, device="cpu")
    configs = [
        replace(base, optimizer="insgd", norm="l2", lr=0.01, seed=5),
        replace(base, optimizer="sgd", lr=100.0, seed=6),
        replace(base, optimizer="sgd", lr=0.01, seed=7),
    ]
    fused, seen = _run(configs)
    solo = [train(c) for c in configs]

    nan_member = fused[1].epochs
    assert len(nan_member) == 1 and nan_member[0].diverged
    assert math.isnan(nan_member[0].train_loss) and math.isnan(nan_member[0].val_loss)
    assert nan_member[0].val_accuracy == 0.0
    assert [m for m, _ in seen] == [0, 1, 2, 0, 2]
    # Equal to the solo trial, whose loop broke at the first NaN step: the accuracy over
    # the images seen up to there matches only if the member stopped at that very step.
    for f, s in zip(fused, solo, strict=True):
        assert_same_trial(f, s)


@pytest.mark.parametrize("grouped", [False, True], ids=["per-member", "grouped"])
@pytest.mark.parametrize("model_name", ["toy-cnn", "resnet20", "mlp"])
def test_nan_weights_of_one_member_reach_no_other_member(model_name: str, grouped: bool) -> None:
    """Poison member 1 (NaN weights and BN buffers): the others' logits, gradients and BN
    running statistics are exactly what they are without it."""
    k, size = 3, 8
    channels = 1 if model_name == "mlp" else 3
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(
            build_model(model_name, in_channels=channels, image_size=size, num_classes=10)
        )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, k * channels, size, size, generator=gen)
    y = torch.randint(0, 10, (6, k), generator=gen)

    def step(poison: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        net = fuse_models(members)
        net.set_conv_mode(grouped)
        net.set_generators([torch.Generator().manual_seed(m) for m in range(k)])
        if poison:
            bad = {
                n: torch.full_like(t, math.nan) if t.is_floating_point() else t
                for n, t in net.member_state_dict(1).items()
            }
            net.load_member_state_dict(1, bad)
        net.train()
        logits = net(x)
        per_member = (
            F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="none")
            .view(6, k)
            .mean(0)
        )
        live = torch.tensor([1.0, 0.0, 1.0])
        (per_member * live).sum().backward()
        grads = {n: p.grad.clone() for n, p in net.net.named_parameters()}
        return logits.detach(), grads, {n: b.clone() for n, b in net.net.named_buffers()}

    clean_logits, clean_grads, clean_buffers = step(poison=False)
    logits, grads, buffers = step(poison=True)
    assert torch.isnan(logits[:, 1]).all()
    for m in (0, 2):
        assert torch.equal(logits[:, m], clean_logits[:, m])
    shapes = fuse_models(members).member_shapes
    for name, grad in grads.items():
        view, clean = grad.view(k, *shapes[name]), clean_grads[name].view(k, *shapes[name])
        assert torch.equal(view[0], clean[0]) and torch.equal(view[2], clean[2]), name
    for name, buffer in buffers.items():
        view, clean = buffer.view(k, *shapes[name]), clean_buffers[name].view(k, *shapes[name])
        assert torch.equal(view[0], clean[0]) and torch.equal(view[2], clean[2]), name
