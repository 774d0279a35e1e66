"""Fused trials against solo ones: every member of a bundle is its own `trainers.train()`.

On CPU (fp32) a bundle's convolutions run per member and every other fused operation
computes the same products in the same order as the solo layer, so each member's weights
are bit-identical to its solo run's at the end, and its per-epoch train/val accuracies are
identical. Loss *metrics* may differ in the last bits (a member's mean over the batch is
reduced over a (B, K) tensor, not by the solo loss kernel): they are compared at rel 1e-6.

The grouped convolutions that CUDA runs are checked separately, one training step of a
grouped bundle against the solo models: in float64 to 1e-9 for every registry model that
fuses, in fp32 to 1e-4 for the small ones (grouped kernels round differently, and
BatchNorm over a few values in the deep ResNets' last stages amplifies that). CUDA's
settings (bf16 autocast, channels_last) are run on CPU against solo trials too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainers import TrainConfig, TrialResult, train
from trainers.fused import fuse_models, setup_fused, train_fused
from trainers.models import build_model
from trainers.train import setup_trial

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING = ("epoch_seconds", "images_per_second")
LOSS_REL = 1e-6


def _variants(base: TrainConfig, granularity: str = "layer") -> list[TrainConfig]:
    """SGD, INSGD-l1 and INSGD-l2 with their own lr, eps, beta and seed."""
    return [
        replace(base, optimizer="sgd", lr=0.05, seed=11),
        replace(base, optimizer="insgd", norm="l1", lr=0.1, eps=0.1, beta=0.5, seed=12,
                granularity=granularity),
        replace(base, optimizer="insgd", norm="l2", lr=0.03, eps=0.01, seed=13,
                granularity=granularity),
    ]  # fmt: skip


def assert_same_trial(fused: TrialResult, solo: TrialResult) -> None:
    """Per epoch: identical accuracies, lr and divergence; losses to LOSS_REL."""
    assert fused.config == solo.config
    assert fused.epochs_completed == solo.epochs_completed
    assert fused.diverged == solo.diverged
    for a, b in zip(fused.epochs, solo.epochs, strict=True):
        assert (a.epoch, a.lr, a.diverged) == (b.epoch, b.lr, b.diverged)
        assert a.train_accuracy == b.train_accuracy
        assert a.val_accuracy == b.val_accuracy
        assert a.train_loss == pytest.approx(b.train_loss, rel=LOSS_REL, nan_ok=True)
        assert a.val_loss == pytest.approx(b.val_loss, rel=LOSS_REL, nan_ok=True)
    assert fused.final_val_accuracy == solo.final_val_accuracy
    assert fused.best_val_accuracy == solo.best_val_accuracy


def _final_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


SYNTHETIC_16 = {"shape": (3, 16, 16), "num_train": 128, "num_val": 64}

CASES = {
    "mlp-digits": (
        TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=128, device="cpu",
                    normalizer="nlms"),
        "layer",
    ),
    "mnist_toy-mnist5k": (
        TrainConfig(dataset="mnist5k", model="mnist-toy", epochs=1, batch_size=256,
                    val_fraction=0.8, device="cpu"),
        "channel",
    ),
    "toy_cnn_bn-digits": (  # BN, dropout, crop+flip
        TrainConfig(dataset="digits", model="toy-cnn", augment=True, epochs=2,
                    batch_size=128, schedule="cosine", device="cpu"),
        "channel",
    ),
    "toy_cnn_nobn-synthetic": (  # the data itself depends on each member's seed
        TrainConfig(dataset="synthetic", model="toy-cnn", batchnorm=False, epochs=2,
                    batch_size=64, warmup_epochs=1, device="cpu",
                    dataset_options=SYNTHETIC_16),
        "layer",
    ),
    "resnet20-synthetic": (
        TrainConfig(dataset="synthetic", model="resnet20", augment=True, epochs=2,
                    batch_size=32, device="cpu", dataset_options=SYNTHETIC_16),
        "layer",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_member_equals_its_solo_trial(case: str, tmp_path: Path) -> None:
    base, granularity = CASES[case]
    configs = _variants(base, granularity)
    reported: list[tuple[int, int]] = []
    fused = train_fused(
        configs,
        on_epoch=lambda member, m: reported.append((member, m.epoch)),
        checkpoint_path=tmp_path / "fused.pt",
    )
    solo = [train(c, checkpoint_path=tmp_path / f"solo{i}.pt") for i, c in enumerate(configs)]

    assert reported == [(m, e) for e in range(1, base.epochs + 1) for m in range(len(configs))]
    fused_state = _final_weights(tmp_path / "fused.pt")
    for index, (f, s) in enumerate(zip(fused, solo, strict=True)):
        assert_same_trial(f, s)
        assert not f.diverged and f.epochs[-1].train_loss < f.epochs[0].train_loss * 1.5
        # The strongest check: the member's final weights and BN buffers, bit for bit.
        for name, tensor in _final_weights(tmp_path / f"solo{index}.pt").items():
            member = fused_state[f"net.{name}"].view(len(configs), *tensor.shape)[index]
            assert torch.equal(member, tensor), name


def test_initial_weights_are_the_solo_trials() -> None:
    base = TrainConfig(dataset="digits", model="toy-cnn", device="cpu")
    configs = [replace(base, seed=s) for s in (3, 1, 3)]
    runner = setup_fused(configs)
    try:
        for index, config in enumerate(configs):
            solo = setup_trial(config, torch.device("cpu"))
            member = runner.net.member_state_dict(index)
            assert member.keys() == solo.model.state_dict().keys()
            for name, tensor in solo.model.state_dict().items():
                assert torch.equal(member[name], tensor), name
    finally:
        runner.close()


# ------------------------------------------------------------- the grouped (CUDA) path

# name -> (build options, image size, members, batch); the big one small and few.
# resnet18 is resnet20-B's CifarResNet with other widths: resnet20-B stands for it.
GROUPED_MODELS = {
    "mlp": ({}, 8, 3, 4),
    "mnist-toy": ({}, 12, 3, 4),
    "toy-cnn": ({}, 16, 3, 4),
    "toy-cnn-nobn": ({"batchnorm": False}, 16, 3, 4),
    "resnet20": ({}, 16, 3, 4),
    "resnet20-B": ({"shortcut": "B"}, 16, 3, 4),
    "wrn-10-1": ({"dropout": 0.3}, 16, 3, 4),
    "resnet50": ({}, 32, 2, 2),
}
# fp32 differs from solo by rounding alone, which BatchNorm over a handful of values (the
# deep ResNets' last stages here) amplifies past any useful tolerance: fp64 checks those.
GROUPED_FP32 = ("mlp", "mnist-toy", "toy-cnn", "toy-cnn-nobn", "resnet20", "wrn-10-1")
GROUPED_CASES = [(n, torch.float64) for n in GROUPED_MODELS] + [
    (n, torch.float32) for n in GROUPED_FP32
]


def _step(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)  # dropout
    model.train()
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("name", "dtype"), GROUPED_CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in GROUPED_CASES]
)
def test_grouped_bundle_step_matches_solo_steps(name: str, dtype: torch.dtype) -> None:
    """Forward (train mode: batch statistics, dropout), gradients and BN running stats of
    a grouped bundle against each member's solo model."""
    options, size, k, batch = GROUPED_MODELS[name]
    model_name = name.removesuffix("-nobn").removesuffix("-B")
    channels = 1 if model_name in ("mnist-toy", "mlp") else 3
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(
            build_model(
                model_name, in_channels=channels, image_size=size, num_classes=10, **options
            ).to(dtype)
        )
    net = fuse_models(members, name=model_name)
    net.set_conv_mode(grouped=True)
    net.set_generators([torch.Generator().manual_seed(100 + m) for m in range(k)])
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, channels, size, size, generator=gen, dtype=dtype) for _ in range(k)]
    ys = [torch.randint(0, 10, (batch,), generator=gen) for _ in range(k)]

    net.train()
    logits = net(torch.cat(xs, dim=1))
    loss = sum(F.cross_entropy(logits[:, m], ys[m]) for m in range(k))
    loss.backward()
    grads = dict(net.net.named_parameters())
    tol = {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for m, member in enumerate(members):
        solo_logits, solo_grads = _step(member, xs[m], ys[m], seed=100 + m)
        torch.testing.assert_close(logits[:, m].detach(), solo_logits, **tol)
        for param_name, grad in solo_grads.items():
            fused_grad = grads[param_name].grad.view(k, *grad.shape)[m]
            scale = grad.abs().max().clamp_min(1e-12)
            torch.testing.assert_close(fused_grad / scale, grad / scale, **tol)
        fused_state = net.member_state_dict(m)
        for buffer_name, buffer in member.named_buffers():
            torch.testing.assert_close(fused_state[buffer_name], buffer, **tol)


@pytest.mark.parametrize("model", ["toy-cnn", "resnet20"])
def test_bf16_autocast_and_channels_last_as_on_cuda(model: str) -> None:
    """The settings CUDA trains with (bf16 autocast, NHWC), here on CPU: the autocast
    batched linear, NHWC packing, dropout masks and option-A shortcut in NHWC. Equal to
    solo up to rounding (loss rel 1e-4), the same accuracies to one image."""
    base = TrainConfig(dataset="synthetic", model=model, augment=True, epochs=2,
                       batch_size=32, amp=True, channels_last=True, device="cpu",
                       dataset_options={"shape": (3, 8, 8), "num_train": 64,
                                        "num_val": 64})  # fmt: skip
    configs = _variants(base)
    fused = train_fused(configs)
    for f, config in zip(fused, configs, strict=True):
        solo = train(config)
        for a, b in zip(f.epochs, solo.epochs, strict=True):
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
            assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=1.01 / 64)
