"""INSGD as an optimizer object: arguments, checkpoints, SGD equivalence, foreach equivalence."""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor, nn

from trainers.insgd import INSGD


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def _batches(n: int, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(4, 3, 6, 6, generator=gen), torch.randn(4, 3, generator=gen)) for _ in range(n)
    ]


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches: list) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


HP = dict(momentum=0.9, dampening=0.1, weight_decay=5e-3)


# ------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"lr": -0.1}, "-0.1"),
        ({"lr": float("nan")}, "nan"),
        ({"eps": 0.0}, "0.0"),
        ({"eps": -1e-3}, "-0.001"),
        ({"beta": 1.0000001}, "1.0000001"),
        ({"beta": -0.5}, "-0.5"),
        ({"momentum": 1.0}, "1.0"),
        ({"momentum": -0.1}, "-0.1"),
        ({"weight_decay": -1e-4}, "-0.0001"),
        ({"dampening": 1.5}, "1.5"),
        ({"norm": "l3"}, "'l3'"),
        ({"granularity": "neuron"}, "'neuron'"),
        ({"normalizer": "sqrt"}, "'sqrt'"),
        ({"nesterov": True, "momentum": 0.0}, "momentum=0.0"),
        ({"nesterov": True, "dampening": 0.5}, "dampening=0.5"),
        ({"foreach": "yes"}, "'yes'"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(kwargs: dict, named: str) -> None:
    args = {"lr": 0.1, **kwargs}
    lr = args.pop("lr")
    with pytest.raises(ValueError, match=named.replace(".", r"\.").replace("-", r"\-")) as info:
        INSGD(nn.Linear(2, 2), lr, **args)
    assert next(iter(kwargs)) in str(info.value)  # names the argument too
    assert "\n" not in str(info.value)


def test_model_must_be_a_module() -> None:
    params = list(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="list"):
        INSGD(params, 0.1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- checkpoints


def test_state_dict_resume_continues_with_identical_updates() -> None:
    batches = _batches(6)
    hp = dict(HP, beta=0.7, granularity="channel")
    straight = _net()
    opt = INSGD(straight, 0.05, **hp)
    _train(straight, opt, batches)

    first = _net()
    opt_first = INSGD(first, 0.05, **hp)
    _train(first, opt_first, batches[:3])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt_first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    resumed = _net()
    with torch.no_grad():  # a fresh model with different weights until loaded
        for p in resumed.parameters():
            p.normal_()
    resumed.load_state_dict(saved["model"])
    opt_resumed = INSGD(resumed, 0.05, **hp)
    opt_resumed.load_state_dict(saved["optimizer"])
    assert float(opt_resumed.normalizers()["0"][0]) == float(opt_first.normalizers()["0"][0])
    _train(resumed, opt_resumed, batches[3:])

    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_load_keeps_input_power_float32_for_a_bf16_model() -> None:
    model = nn.Linear(3, 2).to(torch.bfloat16)
    opt = INSGD(model, 0.1)
    model(torch.randn(2, 3, dtype=torch.bfloat16) * 7).sum().backward()
    opt.step()
    state = opt.state_dict()
    opt2 = INSGD(model, 0.1)
    opt2.load_state_dict(state)
    assert opt2.state[model.weight]["input_power"].dtype == torch.float32
    assert torch.equal(
        opt2.state[model.weight]["input_power"], opt.state[model.weight]["input_power"]
    )
    assert opt2.state[model.weight]["momentum_buffer"].dtype == torch.bfloat16


def test_load_refuses_a_state_saved_with_another_norm() -> None:
    model = nn.Linear(3, 2)
    opt = INSGD(model, 0.1, norm="l1")
    with pytest.raises(ValueError, match="norm='l1'"):
        INSGD(model, 0.1, norm="l2").load_state_dict(opt.state_dict())


# --------------------------------------------------------------------------- SGD equivalence


def _is_normalized(name: str) -> bool:
    return name in ("0.weight", "3.weight", "5.weight")


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_untracked_parameters_get_exactly_the_sgd_update(foreach: bool, nesterov: bool) -> None:
    """Same gradients each step (drawn, not backpropagated): biases and BN must match SGD."""
    hp = dict(HP, dampening=0.0) if nesterov else dict(HP)
    model_i, model_s = _net(), _net()
    insgd = INSGD(model_i, 0.05, nesterov=nesterov, foreach=foreach, **hp)
    sgd = torch.optim.SGD(model_s.parameters(), 0.05, nesterov=nesterov, foreach=foreach, **hp)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        model_i(torch.randn(2, 3, 6, 6, generator=gen))  # feeds the input energies
        for p_i, p_s in zip(model_i.parameters(), model_s.parameters(), strict=True):
            g = torch.randn(p_i.shape, generator=gen)
            p_i.grad, p_s.grad = g.clone(), g.clone()
        insgd.step()
        sgd.step()
    names = [n for n, _ in model_i.named_parameters()]
    for name, a, b in zip(names, model_i.parameters(), model_s.parameters(), strict=True):
        if _is_normalized(name):
            assert not torch.equal(a, b), name
        else:
            assert torch.equal(a, b), name


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("how", ["hooks removed", "eval-mode forwards"])
def test_model_whose_layers_never_saw_training_input_is_sgd(foreach: bool, how: str) -> None:
    batches = _batches(4)
    model_i, model_s = _net(), _net()
    insgd = INSGD(model_i, 0.05, foreach=foreach, **HP)
    sgd = torch.optim.SGD(model_s.parameters(), 0.05, foreach=foreach, **HP)
    if how == "hooks removed":
        insgd.remove_hooks()
    else:
        model_i.eval()
        model_s.eval()
    _train(model_i, insgd, batches)
    _train(model_s, sgd, batches)
    for a, b in zip(model_i.state_dict().values(), model_s.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert insgd.normalizers() == {}


def test_step_does_not_modify_the_gradients() -> None:
    model = _net()
    opt = INSGD(model, 0.05, nesterov=True, momentum=0.9, foreach=True)
    x, y = _batches(1)[0]
    for _ in range(2):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for p, g in zip(model.parameters(), grads, strict=True):
            assert torch.equal(p.grad, g)


# ----------------------------------------------------------------------- foreach equivalence


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("normalizer", ["log", "nlms"])
def test_foreach_and_per_tensor_paths_agree_bit_for_bit(granularity: str, normalizer: str) -> None:
    batches = _batches(4)
    finals = []
    for foreach in (False, True):
        model = _net()
        opt = INSGD(
            model, 0.05, granularity=granularity, normalizer=normalizer, foreach=foreach, **HP
        )
        _train(model, opt, batches)
        finals.append(model.state_dict())
    for a, b in zip(finals[0].values(), finals[1].values(), strict=True):
        assert torch.equal(a, b)
