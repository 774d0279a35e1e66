"""INSGD against the published rule, with expectations computed independently of the code.

A closed-form NLMS step, hand-worked grouped/depthwise channel maps, and a
plain-loop float64 reference of Algorithm 1 (INSGD.md) run for several steps
with momentum, dampening, Nesterov, weight decay and beta, including beta = 1
(the frozen-normalizer control).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.insgd import INSGD

# --------------------------------------------------------------------------- NLMS, by hand


def test_single_linear_neuron_matches_closed_form_nlms_step() -> None:
    torch.manual_seed(0)
    d, mu, eps = 5, 0.3, 0.01
    neuron = nn.Linear(d, 1, bias=False)
    opt = INSGD(neuron, mu, normalizer="nlms", eps=eps, beta=0.0, momentum=0.0)
    w0 = neuron.weight.detach().clone()[0]
    x = torch.randn(d)
    y = torch.tensor(0.7)

    error = y - w0 @ x
    loss = 0.5 * (y - neuron(x.unsqueeze(0))[0, 0]) ** 2
    loss.backward()
    opt.step()

    expected = w0 + mu * error * x / (eps + (x * x).sum())
    torch.testing.assert_close(neuron.weight.detach()[0], expected, rtol=1e-6, atol=1e-7)


def test_batch_uses_mean_over_rows_of_the_input_energy() -> None:
    torch.manual_seed(1)
    d, n, mu, eps = 4, 6, 0.2, 0.5
    neuron = nn.Linear(d, 1, bias=False)
    opt = INSGD(neuron, mu, normalizer="nlms", eps=eps, beta=0.0, momentum=0.0)
    w0 = neuron.weight.detach().clone()[0]
    # Leading dims (2, 3) flatten to 6 rows.
    x = torch.randn(2, 3, d)
    y = torch.randn(2, 3)

    rows = x.reshape(n, d)
    errors = y.reshape(n) - rows @ w0
    loss = (0.5 * (y - neuron(x)[..., 0]) ** 2).mean()
    loss.backward()
    opt.step()

    mean_energy = sum(float(r @ r) for r in rows) / n
    expected = w0 + mu * (errors[:, None] * rows).mean(0) / (eps + mean_energy)
    torch.testing.assert_close(neuron.weight.detach()[0], expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ channel maps, by hand


def _one_step_with_unit_gradient_sum(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Return the weight change of one INSGD step (lr 1, nlms, eps 1) on loss = sum(out)."""
    opt = INSGD(
        conv, 1.0, norm="l2", granularity="channel", normalizer="nlms", eps=1.0, momentum=0.0
    )
    w0 = conv.weight.detach().clone()
    conv(x).sum().backward()
    opt.step()
    return (conv.weight.detach() - w0).flatten(1)


def test_grouped_conv_channel_map_by_hand() -> None:
    # 1x1 conv, 4 -> 4 channels, 2 groups: W[o, j] reads channel (o // 2) * 2 + j.
    conv = nn.Conv2d(4, 4, 1, groups=2, bias=False)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    # s_c = x_c^2 = 1, 4, 9, 16; f_c = 1 + s_c = 2, 5, 10, 17; dL/dW[o, j] = x_c.
    delta = _one_step_with_unit_gradient_sum(conv, x)
    expected = -torch.tensor([[1 / 2, 2 / 5], [1 / 2, 2 / 5], [3 / 10, 4 / 17], [3 / 10, 4 / 17]])
    torch.testing.assert_close(delta, expected)


def test_depthwise_conv_channel_map_by_hand() -> None:
    # 3 -> 6 channels, groups 3: W[o, 0] reads channel o // 2.
    conv = nn.Conv2d(3, 6, 1, groups=3, bias=False)
    # Two samples, 1x2 maps: s_c = mean over b of sum over space of x^2.
    x = torch.tensor(
        [[[[1.0, 0.0]], [[2.0, 0.0]], [[0.0, 3.0]]], [[[1.0, 0.0]], [[0.0, 0.0]], [[3.0, 3.0]]]]
    )
    # s = (1 + 1)/2, (4 + 0)/2, (9 + 18)/2 = 1, 2, 13.5; f = 2, 3, 14.5.
    # dL/dW[o, 0] = sum over b, space of x[b, o // 2] = 2, 2, 9.
    delta = _one_step_with_unit_gradient_sum(conv, x)
    expected = -torch.tensor([2 / 2, 2 / 2, 2 / 3, 2 / 3, 9 / 14.5, 9 / 14.5]).view(6, 1)
    torch.testing.assert_close(delta, expected)


def test_layer_granularity_conv_energy_sums_channels_and_space() -> None:
    conv = nn.Conv2d(2, 1, 1, bias=False)
    opt = INSGD(conv, 0.1, norm="l1", granularity="layer", normalizer="nlms", eps=1.0)
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]], [[[0.0, 0.0]], [[-4.0, 0.0]]]])
    conv(x).sum().backward()
    opt.step()
    # l1: (|1| + |-2| + |3|) = 6 and 4, mean over b = 5; f = 1 + 5.
    assert float(opt.normalizers()[""]) == pytest.approx(6.0)


# ------------------------------------------------------------------------- the log floor


def test_log_normalizer_floors_at_eps_when_log_power_is_small() -> None:
    lin = nn.Linear(4, 1, bias=False)
    eps = 0.5
    opt = INSGD(lin, 1.0, normalizer="log", eps=eps, momentum=0.0)
    w0 = lin.weight.detach().clone()
    x = torch.full((1, 4), 0.1)  # P = 4 * 0.01 = 0.04, log P = -3.2 < eps
    lin(x).sum().backward()
    opt.step()
    assert float(opt.normalizers()[""]) == eps
    torch.testing.assert_close(lin.weight.detach(), w0 - x / eps)


def test_log_normalizer_is_log_power_above_the_floor() -> None:
    lin = nn.Linear(2, 1, bias=False)
    opt = INSGD(lin, 1.0, normalizer="log", eps=0.01, momentum=0.0)
    x = torch.tensor([[3.0, 4.0]])  # P = 25
    lin(x).sum().backward()
    opt.step()
    assert float(opt.normalizers()[""]) == pytest.approx(math.log(25.0), rel=1e-6)


# ------------------------------------------------------------- plain-loop float64 reference


def _energy(x: Tensor, p: int, kind: str, per_channel: bool) -> float | list[float]:
    """Input energy by loops: mean over samples (rows) of the sum of |x|^p."""
    if kind == "linear":
        rows = x.reshape(-1, x.shape[-1])
        return sum(float((r.abs() ** p).sum()) for r in rows) / len(rows)
    batch, channels = x.shape[0], x.shape[1]
    if per_channel:
        return [
            sum(float((x[b, c].abs() ** p).sum()) for b in range(batch)) / batch
            for c in range(channels)
        ]
    return sum(float((x[b].abs() ** p).sum()) for b in range(batch)) / batch


class ReferenceINSGD:
    """Algorithm 1 of INSGD.md, written out with Python floats and explicit loops."""

    def __init__(self, params: dict[str, Tensor], layers: dict[str, tuple[str, int]], **hp):
        self.params = params
        self.layers = layers  # weight name -> ("linear" | "conv", groups)
        self.hp = hp
        self.power: dict[str, float | list[float]] = {}
        self.buf: dict[str, Tensor] = {}

    def _f(self, power: float) -> float:
        eps = self.hp["eps"]
        if self.hp["normalizer"] == "log":
            return max(math.log(power), eps)
        return eps + power

    def step(self, grads: dict[str, Tensor], inputs: dict[str, list[Tensor]]) -> None:
        hp = self.hp
        p = 1 if hp["norm"] == "l1" else 2
        for name, xs in inputs.items():
            if not xs:
                continue
            kind, _ = self.layers[name]
            per_channel = kind == "conv" and hp["granularity"] == "channel"
            energies = [_energy(x, p, kind, per_channel) for x in xs]
            if per_channel:
                s = [sum(e[c] for e in energies) / len(energies) for c in range(len(energies[0]))]
            else:
                s = sum(energies) / len(energies)
            if name not in self.power:
                self.power[name] = s
            elif per_channel:
                old = self.power[name]
                beta = hp["beta"]
                self.power[name] = [beta * a + (1 - beta) * b for a, b in zip(old, s, strict=True)]
            else:
                self.power[name] = hp["beta"] * self.power[name] + (1 - hp["beta"]) * s

        for name, w in self.params.items():
            g = grads[name].clone()
            if name in self.power:
                power = self.power[name]
                if isinstance(power, list):
                    _, groups = self.layers[name]
                    c_out, cin_g = w.shape[0], w.shape[1]
                    for o in range(c_out):
                        for j in range(cin_g):
                            g[o, j] /= self._f(power[(o // (c_out // groups)) * cin_g + j])
                else:
                    g /= self._f(power)
            g = g + hp["weight_decay"] * w
            if hp["momentum"] != 0:
                if name not in self.buf:
                    self.buf[name] = g.clone()
                else:
                    self.buf[name] = hp["momentum"] * self.buf[name] + (1 - hp["dampening"]) * g
                b = self.buf[name]
                g = g + hp["momentum"] * b if hp["nesterov"] else b
            w -= hp["lr"] * g


def _net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 5),
    ).double()


def _reference_forward(w: dict[str, Tensor], x: Tensor, seen: dict[str, list[Tensor]]) -> Tensor:
    seen["0.weight"].append(x.detach().clone())
    h = F.relu(F.conv2d(x, w["0.weight"], w["0.bias"]))
    seen["2.weight"].append(h.detach().clone())
    h = F.relu(F.conv2d(h, w["2.weight"], groups=2)).flatten(1)
    seen["5.weight"].append(h.detach().clone())
    return F.linear(h, w["5.weight"], w["5.bias"])


COMBOS = [(n, g, f) for n in ("l1", "l2") for g in ("layer", "channel") for f in ("log", "nlms")]


@pytest.mark.parametrize(
    ("norm", "granularity", "normalizer", "momentum", "dampening", "nesterov"),
    [(*c, 0.9, 0.1, False) for c in COMBOS]
    + [("l2", "layer", "log", 0.8, 0.0, True), ("l1", "channel", "nlms", 0.5, 0.0, True)],
)
def test_matches_float64_reference_over_several_steps(
    norm: str,
    granularity: str,
    normalizer: str,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    _check_against_reference(
        norm, granularity, normalizer, momentum=momentum, dampening=dampening,
        nesterov=nesterov, beta=0.6,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("norm", "granularity", "normalizer", "momentum", "dampening", "nesterov"),
    [(*c, 0.9, 0.0, False) for c in COMBOS]
    + [("l2", "channel", "log", 0.8, 0.0, True), ("l1", "layer", "nlms", 0.0, 0.0, False)],
)
def test_frozen_normalizer_beta_one_matches_float64_reference(
    norm: str,
    granularity: str,
    normalizer: str,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    """beta = 1, the frozen-normalizer control: the reference's literal EMA keeps P_1."""
    _check_against_reference(
        norm, granularity, normalizer, momentum=momentum, dampening=dampening,
        nesterov=nesterov, beta=1.0,
    )  # fmt: skip


def _check_against_reference(
    norm: str,
    granularity: str,
    normalizer: str,
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
    beta: float,
) -> None:
    """Four steps of INSGD and of `ReferenceINSGD` on `_net()` with random inputs of
    changing size (step 3 accumulates two forwards): the weights must agree."""
    hp = dict(
        lr=0.05,
        eps=0.01 if normalizer == "log" else 0.3,
        beta=beta,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=0.01,
    )
    model = _net()
    opt = INSGD(model, **hp, norm=norm, granularity=granularity, normalizer=normalizer)
    ref_params = {k: v.detach().clone() for k, v in model.named_parameters()}
    layers = {"0.weight": ("conv", 1), "2.weight": ("conv", 2), "5.weight": ("linear", 1)}
    ref = ReferenceINSGD(
        ref_params, layers, **hp, norm=norm, granularity=granularity, normalizer=normalizer
    )
    gen = torch.Generator().manual_seed(7)
    for step in range(4):
        micro_batches = 2 if step == 2 else 1  # step 3 accumulates two forwards
        seen: dict[str, list[Tensor]] = {k: [] for k in layers}
        ref_grads = {k: torch.zeros_like(v) for k, v in ref_params.items()}
        opt.zero_grad()
        for _ in range(micro_batches):
            x = (1 + step) * torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
            y = torch.randn(3, 5, generator=gen, dtype=torch.float64)
            F.mse_loss(model(x), y).backward()
            leaves = {k: v.clone().requires_grad_(True) for k, v in ref_params.items()}
            F.mse_loss(_reference_forward(leaves, x, seen), y).backward()
            for k, v in leaves.items():
                ref_grads[k] += v.grad
        opt.step()
        ref.step(ref_grads, seen)
        for k, v in model.named_parameters():
            torch.testing.assert_close(v.detach(), ref_params[k], rtol=1e-6, atol=1e-8)


def test_reference_normalizers_are_the_expected_shapes() -> None:
    model = _net()
    opt = INSGD(model, 0.1, granularity="channel")
    F.mse_loss(model(torch.randn(2, 3, 8, 8, dtype=torch.float64)), torch.zeros(2, 5).double())
    assert opt.normalizers() == {}  # nothing until a step consumes the energies
    model(torch.randn(2, 3, 8, 8, dtype=torch.float64)).sum().backward()
    opt.step()
    shapes = {k: tuple(v.shape) for k, v in opt.normalizers().items()}
    assert shapes == {"0": (3,), "2": (4,), "5": ()}
    assert all(v.dtype == torch.float32 for v in opt.normalizers().values())
    assert opt.tracked_names == ["0", "2", "5"]
