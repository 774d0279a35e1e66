"""Input energy of Linear and ConvNd layers, measured by forward pre-hooks for INSGD.

INSGD divides a layer's weight gradient by a function of the energy of *that
layer's input* (see /work/shared/INSGD.md). The optimizer never sees the input,
so each normalized layer gets a forward pre-hook that reduces its input to the
energy `s` (a float32 scalar, or a vector over input channels) and keeps it in
a `Site`; `step()` takes the mean over the training forwards since the
previous step (`finish_energies`).

Everything here stays on the input's device and never asks the host for a
tensor's value: the hook runs once per layer per forward, so a host sync here
would stall every training iteration. The per-forward count is a Python int,
known on the host without looking at any tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

NORM_POWERS = {"l1": 1, "l2": 2}
GRANULARITY_CHOICES = ("layer", "channel")

#: The module types whose weights INSGD normalizes (subclasses included).
TRACKED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(eq=False)
class Site:
    """One normalized weight: what its hook has measured since the last step.

    Keyed by the weight (not the module) so a weight shared by several modules
    pools the inputs of all of them, as a module called twice does.

    To keep the hook to one kernel in the common case (one forward per step),
    the first forward stores only the raw reduction `acc` = ||x||_p (per channel
    or whole) and `scale` = 1/rows; `finish_energies` raises it to the power p
    and scales it for all layers at once with foreach kernels in `step()`. A
    second forward before the step finishes both and `acc` becomes the running
    sum of energies. `count` is the number of forwards; all is reset on consumption.

    `frozen` is set by the optimizer when the weight's P can no longer change
    (beta = 1, the frozen-normalizer control, once P_1 exists): the hook then
    measures nothing, since every later energy would be weighted by 1 - beta = 0.
    It survives `reset()`; only the optimizer's step and state loading set it.
    """

    name: str
    weight: nn.Parameter
    is_conv: bool
    groups: int
    in_channels: int
    per_channel: bool
    p: int
    acc: Tensor | None = None
    scale: float = 1.0
    count: int = 0
    frozen: bool = False
    handles: list[Any] = field(default_factory=list)

    @property
    def power_shape(self) -> tuple[int, ...]:
        """Shape of the input power P: a scalar, or one value per input channel."""
        return (self.in_channels,) if self.per_channel else ()

    def reset(self) -> None:
        self.acc, self.scale, self.count = None, 1.0, 0


def tracked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs whose weights INSGD normalizes, in model order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, TRACKED_TYPES) and isinstance(module.weight, nn.Parameter)
    ]


def raw_norm(
    x: Tensor, *, p: int, is_conv: bool, spatial_dims: int, per_channel: bool
) -> tuple[Tensor, float]:
    """(||x||_p over the layer or per input channel, 1 / number of samples).

    The energy of the call, s = mean over samples of sum |x|^p, is raw ** p * scale.
    Linear, x of shape (..., D): N = numel / D rows. ConvNd, x of shape
    (B, C_in, *spatial) (or unbatched (C_in, *spatial), B = 1): per layer the
    norm runs over everything, per channel over (b, spatial) for each c.
    """
    if is_conv:
        batched = x.dim() == spatial_dims + 2
        rows = x.shape[0] if batched else 1
        xb = x if batched else x.unsqueeze(0)
    else:
        rows = x.numel() // x.shape[-1]
        xb = x.reshape(rows, 1, x.shape[-1])
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    n = lp_norm(xb, p, per_channel=per_channel, dtype=dtype, two_stage=x.device.type == "cpu")
    return n, 1.0 / rows


def lp_norm(x: Tensor, p: int, *, per_channel: bool, dtype: torch.dtype, two_stage: bool) -> Tensor:
    """||x||_p of x (B, C, *rest) over everything, or per channel c over (b, rest).

    The reduction runs in `dtype` (float32, or float64 for a float64 input)
    whatever x's dtype (bf16/fp16 under autocast) and memory format.

    One `vector_norm` is one kernel on CUDA, and accurate there. On CPU it
    accumulates long reductions poorly (relative error ~1e-3 over 8M elements),
    the reduction over (b, spatial) is ~10x slower than over a contiguous
    trailing block, and ord=1 has no fast kernel. So CPU takes two stages: the
    norm over `rest` for each (b, c) (abs-sum for p = 1), then over the short
    remainder; same value, accurate to float32 and faster.
    """
    if two_stage:
        flat = x.flatten(2)
        if p == 1:
            inner = flat.abs().sum(2, dtype=dtype)
        else:
            inner = torch.linalg.vector_norm(flat, p, dim=2, dtype=dtype)
        return torch.linalg.vector_norm(inner, p, dim=0 if per_channel else None)
    if per_channel:
        return torch.linalg.vector_norm(x, p, dim=(0, *range(2, x.dim())), dtype=dtype)
    return torch.linalg.vector_norm(x, p, dtype=dtype)


def _finish(n: Tensor, p: int, scale: float) -> Tensor:
    """raw norm -> energy: n ** p * scale (a new tensor)."""
    return (n * n if p == 2 else n).mul(scale)


def make_energy_hook(site: Site) -> Callable[..., None]:
    """A forward pre-hook that adds the input energy of training forwards to `site`.

    Only forwards in training mode with grad enabled count: evaluation and
    `no_grad`/`inference_mode` forwards are not steps of training. The input
    is detached so that no autograd graph is recorded for the measurement. It
    is a plain closure so that `torch.compile` traces it into the graph (dynamo
    replays the mutations of `site`) instead of breaking the graph; a compiled
    model recompiles once when `site.frozen` turns on (dynamo guards on it).
    A frozen site returns at once: its P is fixed, the energy would be discarded.
    """
    spatial_dims = site.weight.dim() - 2

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if site.frozen or not (
            module.training and torch.is_grad_enabled() and site.weight.requires_grad
        ):
            return
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, Tensor) or x.numel() == 0:
            return
        n, scale = raw_norm(
            x.detach(),
            p=site.p,
            is_conv=site.is_conv,
            spatial_dims=spatial_dims,
            per_channel=site.per_channel,
        )
        if site.count == 0:
            site.acc, site.scale = n, scale
        else:
            acc = site.acc
            assert acc is not None
            if site.count == 1:
                acc = _finish(acc, site.p, site.scale)
            site.acc = acc + _finish(n, site.p, scale)
        site.count += 1

    return hook


def finish_energies(sites: list[Site], *, foreach: bool) -> list[Tensor | None]:
    """s_t per site (float32, the mean energy over its forwards since the last step); resets.

    `None` for a site with no training forward since the last step: the caller
    keeps its previous P. Sites that saw exactly one forward still hold a raw
    norm: they are finished together, two foreach kernels for the whole model.
    The results are fresh tensors, never the hook's outputs themselves, so P
    owns its memory even when those outputs belong to a compiled graph.
    """
    out: list[Tensor | None] = [None] * len(sites)
    raw: dict[int, tuple[list[int], list[Tensor], list[float]]] = {}
    for i, site in enumerate(sites):
        acc = site.acc
        if site.count == 0 or acc is None:
            continue
        if site.count == 1:
            at, norms, scales = raw.setdefault(site.p, ([], [], []))
            at.append(i)
            norms.append(acc.float())
            scales.append(site.scale)
        else:
            out[i] = acc.float().div(site.count)
        site.reset()
    for p, (at, norms, scales) in raw.items():
        if foreach:
            if p == 2:
                energies = torch._foreach_mul(norms, norms)
                torch._foreach_mul_(energies, scales)
            else:
                energies = torch._foreach_mul(norms, scales)
        else:
            energies = [(n * n if p == 2 else n).mul(c) for n, c in zip(norms, scales, strict=True)]
        for i, s in zip(at, energies, strict=True):
            out[i] = s
    return out


def build_sites(model: nn.Module, *, norm: str, granularity: str) -> dict[nn.Parameter, Site]:
    """Create one `Site` per distinct normalized weight and hook every module using it.

    "channel" granularity only changes convolutions: a Linear layer has one
    input channel axis of length D, and the published rule keeps it a scalar.
    """
    p = NORM_POWERS[norm]
    sites: dict[nn.Parameter, Site] = {}
    for name, module in tracked_modules(model):
        weight = module.weight
        is_conv = not isinstance(module, nn.Linear)
        site = sites.get(weight)
        if site is None:
            site = Site(
                name=name,
                weight=weight,
                is_conv=is_conv,
                groups=module.groups if is_conv else 1,
                in_channels=module.in_channels if is_conv else module.in_features,
                per_channel=is_conv and granularity == "channel",
                p=p,
            )
            sites[weight] = site
        elif (site.is_conv, site.groups) != (is_conv, module.groups if is_conv else 1):
            raise ValueError(
                f"module {name!r} shares its weight with {site.name!r} but has a different "
                "type or groups; INSGD needs one input layout per weight"
            )
        hook = make_energy_hook(site)
        site.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return sites


def broadcast_to_weight(f: Tensor, site: Site) -> Tensor:
    """Lay a per-input-channel normalizer over the weight (C_out, C_in/groups, *k).

    Weight slice W[o, j] reads input channel (o // (C_out/groups)) * (C_in/groups) + j.
    With one group that is just channel j, a free view; otherwise the vector is
    repeated across each group's output channels (a small copy, C_out * C_in/groups).
    """
    if not site.per_channel:
        return f
    c_out, cin_g = site.weight.shape[0], site.weight.shape[1]
    ones = (1,) * (site.weight.dim() - 2)
    if site.groups == 1:
        return f.view(1, cin_g, *ones)
    cout_g = c_out // site.groups
    per_out = f.view(site.groups, 1, cin_g).expand(site.groups, cout_g, cin_g)
    return per_out.reshape(c_out, cin_g, *ones)
