"""What may fuse and what may not, said clearly; the fused optimizer member by member."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers import TrainConfig
from trainers.fused import FusedINSGD, MemberRule, can_fuse, fuse_models, train_fused
from trainers.insgd import INSGD
from trainers.models import MODEL_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = TrainConfig(dataset="digits", model="mlp", epochs=1, device="cpu")


# ---------------------------------------------------------------------------- can_fuse


def test_members_may_differ_in_lr_optimizer_norm_eps_beta_and_seed() -> None:
    configs = [
        replace(BASE, optimizer="sgd", lr=0.3, seed=1, granularity="channel", normalizer="nlms"),
        replace(BASE, optimizer="insgd", norm="l1", lr=0.01, eps=0.5, beta=0.0, seed=2),
        replace(BASE, optimizer="insgd", norm="l2", lr=0.1, eps=1e-3, seed=2),
    ]
    assert can_fuse(configs) is None  # SGD ignores granularity and normalizer


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"batch_size": 64}, ["configuration 1", "batch_size=64 (not 128)"]),
        ({"momentum": 0.5}, ["momentum"]),
        ({"model_options": {"hidden": (32,)}}, ["model_options"]),
        ({"normalizer": "nlms"}, ["INSGD members differ in normalizer"]),
        ({"granularity": "channel"}, ["INSGD members differ in granularity"]),
    ],
)
def test_configs_that_differ_elsewhere_do_not_fuse(change: dict, words: list[str]) -> None:
    configs = [BASE, replace(BASE, seed=1, **change)]
    reason = can_fuse(configs)
    assert reason is not None
    for word in words:
        assert word in reason
    with pytest.raises(ValueError, match="cannot fuse these trials"):
        train_fused(configs)


def test_other_reasons_not_to_fuse() -> None:
    assert can_fuse([]) == "no configurations to fuse"
    assert "compile" in (can_fuse([replace(BASE, compile=True)]) or "")
    assert "unknown model 'nope'" in (can_fuse([replace(BASE, model="nope")]) or "")
    assert "not a TrainConfig" in (can_fuse([BASE, BASE.to_dict()]) or "")  # type: ignore[list-item]


@pytest.mark.parametrize("model", [*MODEL_NAMES, "wrn-16-4"])
def test_every_registry_model_fuses(model: str) -> None:
    assert can_fuse([replace(BASE, model=model), replace(BASE, model=model, seed=1)]) is None


# ------------------------------------------------------------------------- fuse_models


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x))


def test_a_layer_without_fused_form_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"model 'net-x'.*layer 'norm' of type LayerNorm"):
        fuse_models([WithLayerNorm(), WithLayerNorm()], name="net-x")
    grouped = [nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)) for _ in range(2)]
    with pytest.raises(ValueError, match=r"layer '0' is a grouped convolution"):
        fuse_models(grouped, name="grouped")
    with pytest.raises(ValueError, match="member 1 differs from member 0"):
        fuse_models([nn.Linear(4, 2), nn.Linear(4, 3)], name="lin")
    shared = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="same module"):
        fuse_models([nn.Sequential(shared, nn.ReLU(), shared)] * 2, name="tied")


def test_member_state_round_trips_and_parks() -> None:
    members = [nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)) for _ in range(3)]
    net = fuse_models(members)
    for index, member in enumerate(members):
        for name, tensor in member.state_dict().items():
            assert torch.equal(net.member_state_dict(index)[name], tensor)
    net.load_member_state_dict(0, members[2].state_dict())
    assert torch.equal(net.member_state_dict(0)["0.weight"], members[2][0].weight)
    net.park_member(1)
    assert not net.member_state_dict(1)["0.weight"].any()
    assert torch.equal(net.member_state_dict(2)["0.weight"], members[2][0].weight)
    assert net.members_finite().tolist() == [True, True, True]


# ------------------------------------------------------------------------- FusedINSGD


def _toy(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


@pytest.mark.parametrize(
    ("settings", "granularity", "normalizer"),
    [
        ({"momentum": 0.9, "weight_decay": 5e-4}, "layer", "log"),
        ({"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, "channel", "log"),
        ({"momentum": 0.5, "dampening": 0.3}, "channel", "nlms"),
        ({"momentum": 0.0}, "layer", "nlms"),
    ],
)
def test_each_member_steps_exactly_as_its_own_optimizer(
    settings: dict, granularity: str, normalizer: str
) -> None:
    rules = [
        MemberRule("sgd", lr=0.05),
        MemberRule("insgd", lr=0.1, norm="l1", eps=0.2, beta=0.0),
        MemberRule("insgd", lr=0.02, norm="l2", eps=0.01, beta=0.7),
        MemberRule("insgd", lr=0.1, norm="l2", eps=0.05, beta=0.7),
    ]
    solos = [_toy(seed) for seed in range(len(rules))]
    net = fuse_models(solos)
    optimizer = FusedINSGD(net, rules, granularity=granularity, normalizer=normalizer, **settings)
    solo_optimizers: list[torch.optim.Optimizer] = []
    for model, rule in zip(solos, rules, strict=True):
        if rule.optimizer == "sgd":
            solo_optimizers.append(
                torch.optim.SGD(model.parameters(), lr=rule.lr, foreach=True, **settings)
            )
        else:
            solo_optimizers.append(
                INSGD(
                    model,
                    rule.lr,
                    norm=rule.norm,
                    eps=rule.eps,
                    beta=rule.beta,
                    granularity=granularity,
                    normalizer=normalizer,
                    foreach=True,
                    **settings,
                )  # fmt: skip
            )
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        xs = [torch.randn(6, 2, 5, 5, generator=gen) for _ in rules]
        ys = [torch.randint(0, 3, (6,), generator=gen) for _ in rules]
        net.train()
        logits = net(torch.cat(xs, dim=1))
        optimizer.zero_grad()
        sum(F.cross_entropy(logits[:, m], ys[m]) for m in range(len(rules))).backward()
        optimizer.step()
        for model, solo_opt, x, y in zip(solos, solo_optimizers, xs, ys, strict=True):
            solo_opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            solo_opt.step()
    for index, model in enumerate(solos):
        for name, tensor in model.state_dict().items():
            assert torch.equal(net.member_state_dict(index)[name], tensor), (index, name)
    f = optimizer.normalizers()
    for index, solo_opt in enumerate(solo_optimizers):
        if isinstance(solo_opt, INSGD):
            for name, value in solo_opt.normalizers().items():
                assert torch.equal(f[name][index], value), (index, name)


def test_beta_one_keeps_the_first_input_power_and_a_diverged_member_is_frozen() -> None:
    """beta = 1 is the frozen control: P stays P_1 (members with beta < 1 move on)."""
    rules = [MemberRule("insgd", lr=0.1, beta=1.0), MemberRule("insgd", lr=0.1, beta=0.0)]
    net = fuse_models([_toy(0), _toy(1)])
    optimizer = FusedINSGD(net, rules)
    gen = torch.Generator().manual_seed(0)
    powers = []
    for step in range(3):
        x = torch.randn(6, 4, 5, 5, generator=gen) * (step + 1)
        net.train()
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
        assert optimizer.input_power is not None
        powers.append(optimizer.input_power.clone())
    assert torch.equal(powers[0][0], powers[2][0])  # beta 1: frozen at P_1
    assert not torch.equal(powers[0][1], powers[2][1])  # beta 0: P = the latest energy

    optimizer.park(1)  # what the trainer does to a diverged member
    frozen = net.member_state_dict(1)["0.weight"].clone()
    optimizer.zero_grad()
    net(torch.randn(6, 4, 5, 5, generator=gen)).square().mean().backward()
    before = net.member_state_dict(0)["0.weight"].clone()
    optimizer.step()
    assert torch.equal(net.member_state_dict(1)["0.weight"], frozen)
    assert not torch.equal(net.member_state_dict(0)["0.weight"], before)


def test_member_rule_validates() -> None:
    assert MemberRule("insgd", lr=0.1, beta=1.0).beta == 1.0
    for bad in ({"beta": 1.5}, {"beta": -0.1}, {"eps": 0.0}, {"lr": float("nan")}):
        with pytest.raises(ValueError):
            MemberRule("insgd", **{"lr": 0.1, **bad})
    with pytest.raises(ValueError, match="optimizer"):
        MemberRule("adam", lr=0.1)
