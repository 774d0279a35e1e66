"""The INSGD update as functions over lists of tensors, with a foreach path.

Modelled on `torch/optim/sgd.py`: the optimizer class gathers lists and calls
these; `foreach=True` uses the multi-tensor `torch._foreach_*` kernels (few
launches per step on CUDA), `foreach=False` loops over tensors one op at a
time. Both compute the same thing in the same order: bit for bit on CPU
(tested), to rounding where foreach kernels fuse differently (CUDA). None
of these functions reads a tensor's value on the host.

The published rule (Algorithm 1 of Atici, Pan, Cetin; docs/insgd.md),
for a normalized weight W with input power P and normalizer f:

    g = grad / f;  g = g + wd * W;  b = g (first step) or m * b + (1 - tau) * g;
    g = g + m * b (nesterov) or b;  W = W - lr * g

A parameter whose divisor is None (bias, BatchNorm, a layer that never saw a
training input) skips the division: that is exactly `torch.optim.SGD`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from trainers.input_energy import Site, broadcast_to_weight


def update_input_power(
    powers: list[Tensor], energies: list[Tensor], *, beta: float, foreach: bool
) -> None:
    """In place: P <- beta * P + (1 - beta) * s (the EMA for t > 1)."""
    if not powers:
        return
    if foreach:
        torch._foreach_mul_(powers, beta)
        torch._foreach_add_(powers, energies, alpha=1.0 - beta)
    else:
        for power, s in zip(powers, energies, strict=True):
            power.mul_(beta).add_(s, alpha=1.0 - beta)


def normalizer(powers: list[Tensor], *, eps: float, kind: str, foreach: bool) -> list[Tensor]:
    """f(P): "log" is max(log P, eps) (the published f_eps), "nlms" is eps + P.

    Returns new tensors; P is left untouched. log(0) = -inf is floored to eps.
    """
    if not powers:
        return []
    if kind == "log":
        if foreach:
            out = torch._foreach_log(powers)
            torch._foreach_clamp_min_(out, eps)
            return list(out)
        return [torch.log(p).clamp_min_(eps) for p in powers]
    if foreach:
        return list(torch._foreach_add(powers, eps))
    return [p.add(eps) for p in powers]


def divisors_for(
    sites: list[Site], normalizers: list[Tensor], params: list[Tensor]
) -> list[Tensor]:
    """Per-parameter divisors: each site's f laid over its weight, in its dtype and device.

    f is float32 on the input's device; the conversion is skipped (no op at
    all) in the usual case of a float32 weight on that same device.
    """
    out = []
    for site, f, p in zip(sites, normalizers, params, strict=True):
        d = broadcast_to_weight(f, site)
        if d.dtype != p.dtype or d.device != p.device:
            d = d.to(device=p.device, dtype=p.dtype)
        out.append(d)
    return out


def insgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    divisors: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    foreach: bool,
) -> None:
    """Apply one INSGD step to `params` in place; fills new momentum buffers into the list.

    `divisors[i]` is f for params[i] (a 0-d tensor or one broadcastable to it)
    or None for a plain SGD update. `grads` are never modified.
    """
    func = _multi_tensor_insgd if foreach else _single_tensor_insgd
    func(
        params,
        grads,
        momentum_buffer_list,
        divisors,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
    )


def _single_tensor_insgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    divisors: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i]
        divisor = divisors[i]
        if divisor is not None:
            grad = grad / divisor
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = grad.detach().clone()
                momentum_buffer_list[i] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)


def _multi_tensor_insgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    divisors: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    if not params:
        return
    grouped = torch._C._group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffer_list, divisors], True
    )
    for (dev_params_, dev_grads_, dev_bufs, dev_divs), indices in grouped.values():
        dev_params = cast(list[Tensor], dev_params_)
        dev_grads = cast(list[Tensor], dev_grads_)
        g = _scaled_decayed_grads(dev_params, dev_grads, dev_divs, weight_decay)
        if momentum != 0:
            bufs = _update_momentum(g, dev_bufs, momentum, dampening)
            for j, buf in zip(indices, bufs, strict=True):
                momentum_buffer_list[j] = buf
            g = list(torch._foreach_add(g, bufs, alpha=momentum)) if nesterov else bufs
        torch._foreach_add_(dev_params, g, alpha=-lr)


def _scaled_decayed_grads(
    params: list[Tensor],
    grads: list[Tensor],
    divisors: list[Tensor | None],
    weight_decay: float,
) -> list[Tensor]:
    """grad / f (where f is given) then + wd * W, without writing into the grads.

    Divided gradients are fresh tensors, so weight decay is added to them in
    place; the undivided ones get weight decay out of place, as torch's SGD does.
    """
    scaled = [i for i, d in enumerate(divisors) if d is not None]
    plain = [i for i, d in enumerate(divisors) if d is None]
    g: list[Tensor] = list(grads)
    if scaled:
        divided = torch._foreach_div(
            [grads[i] for i in scaled], [cast(Tensor, divisors[i]) for i in scaled]
        )
        if weight_decay != 0:
            torch._foreach_add_(divided, [params[i] for i in scaled], alpha=weight_decay)
        for i, t in zip(scaled, divided, strict=True):
            g[i] = t
    if weight_decay != 0 and plain:
        decayed = torch._foreach_add(
            [grads[i] for i in plain], [params[i] for i in plain], alpha=weight_decay
        )
        for i, t in zip(plain, decayed, strict=True):
            g[i] = t
    return g


def _update_momentum(
    g: list[Tensor], bufs: list[Tensor | None], momentum: float, dampening: float
) -> list[Tensor]:
    """b = g on a parameter's first step, else b = m * b + (1 - tau) * g (in place)."""
    if all(b is not None for b in bufs):
        existing = cast(list[Tensor], bufs)
        torch._foreach_mul_(existing, momentum)
        torch._foreach_add_(existing, g, alpha=1 - dampening)
        return existing
    out: list[Tensor] = []
    for grad, buf in zip(g, bufs, strict=True):
        if buf is None:
            buf = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        out.append(buf)
    return out
