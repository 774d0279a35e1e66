"""beta = 1: the frozen-normalizer control variant of INSGD.

P is set once, P_1 = s_1, from a layer's first training forward and never
changes, so each layer's step is rescaled once at initialization. The updates
themselves are checked against the plain-loop reference of the published rule
in test_insgd_rule.py; here: that P stays exactly P_1 whatever the inputs, that
the hooks stop measuring a layer once it has P (and not before), that this
survives checkpoints and torch.compile, and that TrainConfig/train accept it.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

import trainers.input_energy
from trainers import TrainConfig, train
from trainers.insgd import INSGD
from trainers.train import build_optimizer, setup_trial

# Tiny models on a shared 2-core box: a second OpenMP thread only spins.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    )  # fmt: skip


def _energy(x: Tensor, p: int, per_channel: bool) -> Tensor:
    """Mean over samples of the sum of |x|^p, in float64 (per channel: over b and space)."""
    e = x.double().abs() ** p
    if per_channel:
        return e.sum(dim=(2, 3)).mean(0)
    return e.flatten(1).sum(1).mean()


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Count the hooks' input measurements, by the width (last dim) of the measured input."""
    calls: Counter[int] = Counter()
    real = trainers.input_energy.raw_norm

    def counting(x: Tensor, **kwargs):  # noqa: ANN202
        calls[x.shape[-1]] += 1
        return real(x, **kwargs)

    monkeypatch.setattr(trainers.input_energy, "raw_norm", counting)
    return calls


# --------------------------------------------------------------------------- P stays P_1


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("norm", "granularity"), [("l2", "layer"), ("l1", "channel")])
def test_power_stays_exactly_the_first_steps_while_inputs_change(
    norm: str, granularity: str, foreach: bool
) -> None:
    model = _net()
    opt = INSGD(
        model, 0.05, norm=norm, granularity=granularity, beta=1.0, weight_decay=1e-3,
        foreach=foreach,
    )  # fmt: skip
    conv, lin = model[0].weight, model[3].weight
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(3, 2, 6, 6, generator=gen)
    model(x1).square().sum().backward()
    opt.step()
    p = 1 if norm == "l1" else 2
    first = {w: opt.state[w]["input_power"].clone() for w in (conv, lin)}
    expected = _energy(x1, p, per_channel=granularity == "channel").float()
    torch.testing.assert_close(first[conv], expected)
    f_first = opt.normalizers()

    for scale in (10.0, 0.01, 1e3):  # energies far from s_1, up and down
        opt.zero_grad()
        x = scale * torch.randn(5, 2, 6, 6, generator=gen)
        model(x).square().sum().backward()
        model(x.flip(0)).sum().backward()  # and an accumulated second forward
        opt.step()
        for w in (conv, lin):
            assert torch.equal(opt.state[w]["input_power"], first[w])
        assert opt.normalizers().keys() == f_first.keys()
        for k, f in opt.normalizers().items():
            assert torch.equal(f, f_first[k])


def test_below_one_the_same_inputs_do_move_the_power() -> None:
    """The control for the test above: the inputs are different enough for an EMA to see."""
    model = _net()
    opt = INSGD(model, 0.05, beta=0.999999)
    gen = torch.Generator().manual_seed(1)
    for scale in (1.0, 1e3):
        model(scale * torch.randn(3, 2, 6, 6, generator=gen)).sum().backward()
        opt.step()
        if scale == 1.0:
            first = opt.state[model[0].weight]["input_power"].clone()
    assert not torch.equal(opt.state[model[0].weight]["input_power"], first)


def test_switching_to_beta_one_keeps_the_power_even_past_an_overflowing_energy() -> None:
    """Set by hand between steps, beta = 1 applies at the next step: the energy measured
    before it (here inf in float32) is discarded, where 1 * P + 0 * inf would be NaN."""
    lin = nn.Linear(2, 1, bias=False)
    opt = INSGD(lin, 0.0, beta=0.5, normalizer="nlms", eps=1.0)
    lin(torch.tensor([[1.0, 2.0]])).sum().backward()
    opt.step()
    opt.param_groups[0]["beta"] = 1.0
    lin(torch.tensor([[3e38, 3e38]])).sum().backward()  # measured: the hooks run until the step
    opt.step()
    assert float(opt.state[lin.weight]["input_power"]) == 5.0


# --------------------------------------------------------------------- what gets measured


class _TwoBranches(nn.Module):
    """`a` (width 3) always runs; `b` (width 5) only when asked, in its own train/eval mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 2, bias=False)
        self.b = nn.Linear(5, 2, bias=False)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        out = self.a(x)
        return out if z is None else out + self.b(z)


def test_hooks_stop_measuring_a_layer_once_it_has_its_power(measured: Counter[int]) -> None:
    model = _TwoBranches()
    lr = 0.1
    opt = INSGD(model, lr, beta=1.0, momentum=0.0, normalizer="nlms", eps=1.0)
    gen = torch.Generator().manual_seed(2)

    def step(z: Tensor | None) -> Counter[int]:
        measured.clear()
        opt.zero_grad()
        model(torch.randn(4, 3, generator=gen), z).sum().backward()
        opt.step()
        return Counter(measured)

    assert step(None) == {3: 1}  # a: P_1
    assert step(None) == {}  # a frozen: nothing measured

    # b with a gradient but no training forward yet (eval mode): no P, plain SGD.
    model.b.eval()
    w0 = model.b.weight.detach().clone()
    z = torch.randn(4, 5, generator=gen)
    assert step(z) == {}
    assert "input_power" not in opt.state[model.b.weight]
    torch.testing.assert_close(model.b.weight.detach(), w0 - lr * z.sum(0).expand(2, 5))

    # b's first training forward gives it P_1, and then b stops being measured too.
    model.b.train()
    z = torch.randn(4, 5, generator=gen)
    assert step(z) == {5: 1}
    power = opt.state[model.b.weight]["input_power"]
    assert float(power) == pytest.approx(float(_energy(z, 2, per_channel=False)), rel=1e-6)
    assert step(torch.randn(4, 5, generator=gen)) == {}
    assert torch.equal(opt.state[model.b.weight]["input_power"], power)


def test_below_one_every_training_forward_is_measured(measured: Counter[int]) -> None:
    """The control for the test above: the counter does see the hooks measure."""
    model = _TwoBranches()
    opt = INSGD(model, 0.1, beta=0.9)
    for _ in range(3):
        model(torch.randn(4, 3), torch.randn(4, 5)).sum().backward()
        opt.step()
    assert measured == {3: 3, 5: 3}


# ----------------------------------------------------------------- checkpoints and compile


def test_loaded_frozen_state_stays_frozen_and_loaded_ema_state_measures(
    measured: Counter[int],
) -> None:
    lin = nn.Linear(3, 1, bias=False)
    frozen = INSGD(lin, 0.1, beta=1.0)
    lin(torch.randn(2, 3)).sum().backward()
    frozen.step()
    saved = frozen.state_dict()
    p1 = frozen.state[lin.weight]["input_power"].clone()

    # An optimizer built with beta < 1 takes beta = 1 and P_1 from the checkpoint,
    # and measures nothing from the first forward after loading.
    other = copy.deepcopy(lin)
    resumed = INSGD(other, 0.1, beta=0.5)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["beta"] == 1.0
    measured.clear()
    other(10 * torch.randn(2, 3)).sum().backward()
    resumed.step()
    assert measured == {}
    assert torch.equal(resumed.state[other.weight]["input_power"], p1)

    # A frozen optimizer loading a beta < 1 checkpoint measures again at once.
    saved_ema = copy.deepcopy(saved)
    saved_ema["param_groups"][0]["beta"] = 0.5
    resumed.load_state_dict(saved_ema)
    x = torch.randn(2, 3)
    other(x).sum().backward()
    resumed.step()
    s = _energy(x, 2, per_channel=False)
    expected = 0.5 * p1.double() + 0.5 * s
    power = resumed.state[other.weight]["input_power"]
    assert float(power) == pytest.approx(float(expected), rel=1e-6)


def test_compiled_model_with_frozen_normalizer_matches_eager() -> None:
    torch._dynamo.reset()
    base = _net()
    gen = torch.Generator().manual_seed(3)
    xs = [s * torch.randn(2, 2, 6, 6, generator=gen) for s in (1.0, 5.0, 0.2, 3.0)]
    runs = []
    for compiled in (False, True):
        model = copy.deepcopy(base)
        opt = INSGD(model, 0.1, beta=1.0, granularity="channel", normalizer="nlms")
        fwd = torch.compile(model, backend="eager", fullgraph=True) if compiled else model
        powers = []
        for x in xs:
            opt.zero_grad()
            fwd(x).square().sum().backward()
            opt.step()
            powers.append(opt.state[model[0].weight]["input_power"].clone())
        assert all(torch.equal(p, powers[0]) for p in powers)
        runs.append((powers[0], [p.detach().clone() for p in model.parameters()]))
    torch._dynamo.reset()
    (p_eager, w_eager), (p_comp, w_comp) = runs
    torch.testing.assert_close(p_comp, p_eager)
    for a, b in zip(w_eager, w_comp, strict=True):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------- arguments and config


@pytest.mark.parametrize("beta", [1.0000001, -0.1, float("nan")])
def test_beta_outside_zero_to_one_is_rejected(beta: float) -> None:
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\], got "):
        INSGD(nn.Linear(2, 2), 0.1, beta=beta)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\] or None, got "):
        TrainConfig(beta=beta)


def test_train_config_with_beta_one_validates_and_trains_frozen() -> None:
    config = TrainConfig(dataset="digits", model="mlp", epochs=1, device="cpu", beta=1.0)
    assert config.effective_beta == 1.0
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert build_optimizer(config, nn.Linear(2, 2)).param_groups[0]["beta"] == 1.0

    # In the training loop, P is set by the first step and kept for the whole epoch.
    runner = setup_trial(config)
    try:
        opt = runner.optimizer
        x, y = next(runner.dataset.train_batches(config.batch_size, runner.generator))
        runner.train_step(*runner.prepare(x, y))
        first = {p: s["input_power"].clone() for p, s in opt.state.items() if "input_power" in s}
        assert len(first) == len(opt.tracked_names) > 0
        metrics = runner.run_epoch(1)
        assert not metrics.diverged
        for p, power in first.items():
            assert torch.equal(opt.state[p]["input_power"], power)
    finally:
        runner.close()

    result = train(config)
    ema = train(replace(config, beta=None))
    assert not result.diverged and result.epochs_completed == 1
    assert result.final_val_accuracy > 0.5  # it learns
    assert result.epochs[0].train_loss != ema.epochs[0].train_loss  # beta reached INSGD
