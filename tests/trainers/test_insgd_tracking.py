"""Which forwards INSGD's hooks count, and how: accumulation, eval/no_grad, dtypes, layouts,
torch.compile, hook removal, and that neither hook nor step ever reads a tensor on the host.
"""

from __future__ import annotations

import copy
import gc

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from trainers.input_energy import lp_norm
from trainers.insgd import INSGD


def _l2(x: Tensor) -> float:
    """Mean over rows of the squared L2 norm, in float64, for an input of shape (N, D)."""
    return float(x.double().pow(2).sum(1).mean())


def test_two_forwards_then_one_step_uses_the_mean_energy() -> None:
    lin = nn.Linear(3, 2)
    opt = INSGD(lin, 0.1, normalizer="nlms", eps=1.0)
    x1, x2 = torch.randn(4, 3), 3 * torch.randn(2, 3)
    lin(x1).sum().backward()
    lin(x2).sum().backward()
    opt.step()
    expected = 1.0 + (_l2(x1) + _l2(x2)) / 2
    assert float(opt.normalizers()[""]) == pytest.approx(expected, rel=1e-6)


def test_module_called_twice_in_one_forward_averages_both_calls() -> None:
    lin = nn.Linear(3, 3, bias=False)
    model = nn.Sequential()
    model.add_module("lin", lin)
    opt = INSGD(model, 0.1, normalizer="nlms", eps=1.0)
    x = torch.randn(5, 3)
    h = lin(x)
    lin(h).sum().backward()
    opt.step()
    expected = 1.0 + (_l2(x) + _l2(h.detach())) / 2
    assert float(opt.normalizers()["lin"]) == pytest.approx(expected, rel=1e-6)


def test_power_ema_first_step_rule_then_beta() -> None:
    lin = nn.Linear(2, 1, bias=False)
    opt = INSGD(lin, 0.0, normalizer="nlms", eps=1.0, beta=0.75)
    xs = [torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 1.0]]), torch.tensor([[0.0, 2.0]])]
    expected_powers = [2.0, 0.75 * 2.0 + 0.25 * 10.0, 0.75 * 4.0 + 0.25 * 4.0]
    for x, power in zip(xs, expected_powers, strict=True):
        lin(x).sum().backward()
        opt.step()
        assert float(opt.state[lin.weight]["input_power"]) == pytest.approx(power)


def test_grad_without_a_training_forward_keeps_the_previous_power() -> None:
    lin = nn.Linear(2, 1, bias=False)
    opt = INSGD(lin, 0.5, normalizer="nlms", eps=1.0, momentum=0.0)
    lin(torch.tensor([[2.0, 0.0]])).sum().backward()  # P = 4
    opt.step()
    power = opt.state[lin.weight]["input_power"].clone()
    w0 = lin.weight.detach().clone()
    grad = torch.tensor([[1.0, -2.0]])
    lin.weight.grad = grad.clone()  # a gradient, but no forward since the last step
    opt.step()
    assert torch.equal(opt.state[lin.weight]["input_power"], power)
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.5 * grad / 5.0)


def test_eval_and_no_grad_forwards_do_not_count() -> None:
    lin = nn.Linear(2, 1, bias=False)
    opt = INSGD(lin, 0.1, normalizer="nlms", eps=1.0)
    x = torch.tensor([[1.0, 2.0]])
    lin(x).sum().backward()
    with torch.no_grad():
        lin(100 * x)
    with torch.inference_mode():
        lin(100 * x)
    lin.eval()
    lin(100 * x)
    lin.train()
    opt.step()
    assert float(opt.normalizers()[""]) == pytest.approx(1.0 + 5.0)


def test_weight_shared_by_two_modules_pools_their_inputs() -> None:
    a, b = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)
    b.weight = a.weight
    model = nn.ModuleDict({"a": a, "b": b})
    opt = INSGD(model, 0.1, normalizer="nlms", eps=1.0)
    xa, xb = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    (a(xa).sum() + b(xb).sum()).backward()
    opt.step()
    assert opt.normalizers() == {"a": pytest.approx(1.0 + (1.0 + 9.0) / 2)}


def test_shared_weight_with_different_groups_is_refused() -> None:
    a, b = nn.Conv2d(4, 4, 1, bias=False), nn.Conv2d(8, 4, 1, groups=2, bias=False)
    b.weight = a.weight
    with pytest.raises(ValueError, match="'b' shares its weight with 'a'"):
        INSGD(nn.ModuleDict({"a": a, "b": b}), 0.1)


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        (nn.Conv1d(3, 2, 2), (2, 3, 5)),
        (nn.Conv3d(3, 2, 2), (2, 3, 3, 4, 3)),
        (nn.Conv2d(3, 2, 2), (3, 4, 4)),  # unbatched input: one sample
    ],
)
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_conv_nd_channel_energy(conv: nn.Module, shape: tuple[int, ...], norm: str) -> None:
    opt = INSGD(conv, 0.1, norm=norm, granularity="channel", normalizer="nlms", eps=1.0)
    x = torch.randn(shape)
    conv(x).sum().backward()
    opt.step()
    p = 1 if norm == "l1" else 2
    xb = x.double() if len(shape) == conv.weight.dim() else x.double().unsqueeze(0)
    expected = [
        sum(float(xb[b, c].abs().pow(p).sum()) for b in range(xb.shape[0])) / xb.shape[0]
        for c in range(3)
    ]
    power = opt.state[conv.weight]["input_power"]
    torch.testing.assert_close(power.double(), torch.tensor(expected).double(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(
    "x",
    [
        torch.randn(3, 4, 5),
        torch.randn(2, 4, 3, 5).to(memory_format=torch.channels_last),
        torch.randn(2, 3, 2, 3, 4).to(torch.bfloat16),
        torch.randn(6, 1, 7),  # a Linear input as (rows, 1, D)
    ],
    ids=["conv1d", "channels_last", "conv3d-bf16", "linear"],
)
def test_single_and_two_stage_norms_agree(x: Tensor, per_channel: bool, p: int) -> None:
    """CUDA reduces in one kernel, CPU in two stages: both must give the exact Lp norm."""
    xd = x.double().abs().pow(p)
    if per_channel:
        sums = [float(xd[:, c].sum()) for c in range(x.shape[1])]
    else:
        sums = [float(xd.sum())]
    expected = torch.tensor(sums, dtype=torch.float64).pow(1 / p)
    for two_stage in (False, True):
        got = lp_norm(x, p, per_channel=per_channel, dtype=torch.float32, two_stage=two_stage)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double().reshape(-1), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [1, 2])
def test_cpu_energy_of_a_large_input_is_float32_accurate(p: int) -> None:
    """A single CPU vector_norm over these 2M values is off by ~1e-5 (l1) / ~4e-6 (l2)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(128, 16, 32, 32, generator=gen) + 0.5  # positive: errors cannot cancel
    expected = float(x.double().pow(p).sum()) ** (1 / p)
    got = lp_norm(x, p, per_channel=False, dtype=torch.float32, two_stage=True)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_channels_last_gives_the_same_energies_and_update() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.ReLU(), nn.Conv2d(6, 4, 1))
    x = torch.randn(2, 3, 7, 7)
    results = []
    for channels_last in (False, True):
        model = copy.deepcopy(base)
        inp = x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            inp = x.to(memory_format=torch.channels_last)
        opt = INSGD(model, 0.1, granularity="channel")
        model(inp).square().sum().backward()
        opt.step()
        results.append((opt.normalizers(), [p.detach().clone() for p in model.parameters()]))
    (f_a, p_a), (f_b, p_b) = results
    for k in f_a:
        torch.testing.assert_close(f_a[k], f_b[k], rtol=1e-6, atol=0)
    for a, b in zip(p_a, p_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_input_gives_float32_energy_of_the_bf16_values() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = INSGD(model, 0.1, norm="l2", normalizer="nlms", eps=1.0)
    seen: list[Tensor] = []
    model[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 8)).float().sum().backward()
    opt.step()
    assert seen[0].dtype == torch.bfloat16
    power = opt.state[model[2].weight]["input_power"]
    assert power.dtype == torch.float32
    assert float(power) == pytest.approx(_l2(seen[0]), rel=1e-6)


def test_compiled_model_feeds_the_same_energies() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))
    xs = [torch.randn(2, 2, 6, 6) for _ in range(3)]
    runs = []
    for compiled in (False, True):
        model = copy.deepcopy(base)
        opt = INSGD(model, 0.1, granularity="channel", normalizer="nlms")
        fwd = torch.compile(model, backend="eager", fullgraph=True) if compiled else model
        for i, x in enumerate(xs):
            fwd(x).square().sum().backward()
            if i != 1:  # step 2 accumulates two forwards
                opt.step()
                opt.zero_grad()
        runs.append((opt.normalizers(), [p.detach().clone() for p in model.parameters()]))
    torch._dynamo.reset()
    (f_eager, p_eager), (f_comp, p_comp) = runs
    assert f_eager.keys() == f_comp.keys() == {"0", "3"}
    for k in f_eager:
        torch.testing.assert_close(f_comp[k], f_eager[k])
    for a, b in zip(p_eager, p_comp, strict=True):
        torch.testing.assert_close(a, b)


def test_remove_hooks_stops_tracking_and_keeps_power() -> None:
    lin = nn.Linear(2, 1)
    opt = INSGD(lin, 0.1, normalizer="nlms", eps=1.0)
    lin(torch.tensor([[1.0, 0.0]])).sum().backward()
    opt.step()
    opt.remove_hooks()
    assert not lin._forward_pre_hooks
    lin(torch.tensor([[10.0, 0.0]])).sum().backward()
    opt.step()
    assert float(opt.normalizers()[""]) == pytest.approx(2.0)
    opt.remove_hooks()  # idempotent


def test_dropped_optimizer_detaches_its_hooks() -> None:
    lin = nn.Linear(2, 1)
    opt = INSGD(lin, 0.1)
    assert len(lin._forward_pre_hooks) == 1
    del opt
    gc.collect()
    assert not lin._forward_pre_hooks


class _NoHostSync(TorchDispatchMode):
    """Fail on any aten op that has to read a tensor's value on the host."""

    SYNCING = ("_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select", "unique")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        if any(name.startswith(s) for s in self.SYNCING):
            raise AssertionError(f"host sync: aten.{name}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def no_host_reads(monkeypatch: pytest.MonkeyPatch):
    def refuse(*args, **kwargs):
        raise AssertionError("host read of a tensor")

    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    return _NoHostSync


def test_guard_catches_a_sync(no_host_reads) -> None:
    t = torch.ones(())
    with pytest.raises(AssertionError):
        t.item()
    with pytest.raises(AssertionError):
        bool(t > 0)
    with no_host_reads(), pytest.raises(AssertionError, match="host sync"):
        torch.ones(3).nonzero()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_hooks_and_step_never_read_tensors_on_the_host(
    no_host_reads, foreach: bool, granularity: str
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, groups=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 2),
    )  # fmt: skip
    opt = INSGD(
        model, 0.1, weight_decay=1e-3, nesterov=True, foreach=foreach, granularity=granularity
    )
    with no_host_reads():
        for _ in range(3):  # first steps and steady state
            for _ in range(2):  # with accumulation
                model(torch.randn(2, 3, 6, 6)).square().sum().backward()
            opt.step()
            opt.zero_grad()
    assert len(opt.state[model[0].weight]) == 2  # input_power and momentum_buffer
