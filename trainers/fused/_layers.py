"""Layers that run K copies of one layer at once on member-packed activations.

Layout: the members of a bundle are packed along dimension 1, member-major. A conv
activation is (B, K*C, H, W) -- member k owns channels [k*C, (k+1)*C) -- and a flat one is
(B, K*F). That is the layout a grouped convolution with K groups reads and writes, and
`torch.flatten(x, 1)` of a packed conv activation is exactly the packed flat activation
(member-major blocks, each in its solo (c, h, w) order). So the models' own `forward` code
(ReLU, residual adds, pooling, flatten) runs unchanged on packed tensors; only the layers
that mix features or hold per-member state are replaced:

- `FusedConv2d`: one convolution with groups = K (its weight is the K weights concatenated
  along dim 0, so `weight.view(K, *member_shape)` gives member k's weight). On CPU it runs
  one convolution per member instead (`grouped`): oneDNN computes a grouped 1x1 conv, or
  one with few input channels, with other kernels than the solo conv (different rounding;
  3x3 convs with >= 8 channels agree bit for bit), and on CPU grouping buys no speed, so
  CPU bundles stay bit-identical to solo runs. CUDA always takes the grouped conv.
- `FusedLinear`: one batched matmul (baddbmm) over a (K, out, in) weight, with a backward
  that computes the same products as `nn.Linear`'s (see `_BatchedLinear`).
- `FusedBatchNorm2d`: BatchNorm over K*C channels: every member keeps its own batch
  statistics and running averages, because BN never mixes channels.
- `FusedDropout`: member k's mask is drawn from member k's own generator, in the shape and
  order its solo run draws it, so on CPU it is the very mask of the solo run.
- `FusedPadShortcut`: ResNet option A's channel padding, per member.

Every fused tensor `t` of a layer satisfies ``t.view(K, *member_shape)[k] == member k's
tensor``, which is what `trainers.fused._model` relies on to stack and unstack members.

`EnergyProbe` is INSGD's input-energy measurement (`trainers.input_energy`) per member:
the layer calls it on its input, and it keeps the raw per-member l_p norms until the
optimizer's step consumes them. Like the solo hooks, it never reads a value on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EnergyProbe:
    """Per-member input energy of one fused Linear/Conv since the last optimizer step.

    Mirrors `trainers.input_energy.Site` and `raw_norm`/`lp_norm`, one row per member:
    the first forward stores raw norms n (K,) or (K, C) for every exponent p asked for and
    the row scale 1/rows; a second forward before the step finishes both (n**p * scale) and
    sums; `finish()` returns the mean energy per p and resets.
    """

    def __init__(
        self, num_members: int, powers: Sequence[int], *, is_conv: bool, per_channel: bool
    ):
        self.num_members = num_members
        self.powers = tuple(sorted(set(powers)))
        self.is_conv = is_conv
        self.per_channel = per_channel
        self.acc: dict[int, Tensor] = {}
        self.scale = 1.0
        self.count = 0

    def reset(self) -> None:
        self.acc, self.scale, self.count = {}, 1.0, 0

    def record(self, x: Tensor) -> None:
        """Add the energy of one training forward's input `x` (packed layout)."""
        if x.numel() == 0:
            return
        x = x.detach()
        norms = {}
        rows = 1
        for p in self.powers:
            norms[p], rows = member_lp_norm(
                x, self.num_members, p, is_conv=self.is_conv, per_channel=self.per_channel
            )
        scale = 1.0 / rows
        if self.count == 0:
            self.acc, self.scale = norms, scale
        else:
            for p in self.powers:
                acc = self.acc[p]
                if self.count == 1:
                    acc = _finish(acc, p, self.scale)
                self.acc[p] = acc + _finish(norms[p], p, scale)
        self.count += 1

    def finish(self) -> dict[int, Tensor] | None:
        """{p: s} with s (K,) or (K, C) float32, the mean energy since the last call; None
        when no training forward ran since (the optimizer then keeps P)."""
        if self.count == 0:
            return None
        if self.count == 1:
            out = {p: _finish(n.float(), p, self.scale) for p, n in self.acc.items()}
        else:
            out = {p: acc.float().div(self.count) for p, acc in self.acc.items()}
        self.reset()
        return out


def _finish(n: Tensor, p: int, scale: float) -> Tensor:
    """raw norm -> energy, the same two operations as `trainers.input_energy`."""
    return (n * n if p == 2 else n).mul(scale)


def member_lp_norm(
    x: Tensor, num_members: int, p: int, *, is_conv: bool, per_channel: bool
) -> tuple[Tensor, int]:
    """(||x_k||_p per member, or per member and input channel; rows per member).

    The per-member counterpart of `trainers.input_energy.raw_norm` + `lp_norm`, in float32
    (float64 for a float64 input) whatever the autocast dtype. Elsewhere than on CPU it is
    one kernel for all members. On CPU it takes the solo code's two stages: the first
    (over each row's and channel's trailing block) for all members at once, the second
    (over the short rest) member by member on a contiguous copy of that member's block, as
    the solo code reduces it: a reduction over a strided or batched view sums in another
    order, and P would drift from the solo P in the last bits.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = num_members
    if is_conv:
        batch, channels = x.shape[0], x.shape[1] // k
        if x.device.type == "cpu":
            flat = x.flatten(2)  # (B, K*C, spatial)
            if p == 1:
                inner = flat.abs().sum(2, dtype=dtype)
            else:
                inner = torch.linalg.vector_norm(flat, p, dim=2, dtype=dtype)  # (B, K*C)
            dim = 0 if per_channel else None
            blocks = inner.view(batch, k, channels).unbind(1)
            norms = [torch.linalg.vector_norm(b.contiguous(), p, dim=dim) for b in blocks]
            return torch.stack(norms), batch
        view = x.reshape(batch, k, channels, *x.shape[2:])
        spatial = tuple(range(3, view.dim()))
        if per_channel:
            return torch.linalg.vector_norm(view, p, dim=(0, *spatial), dtype=dtype), batch
        return torch.linalg.vector_norm(view, p, dim=(0, 2, *spatial), dtype=dtype), batch
    features = x.shape[-1] // k
    rows = x.numel() // x.shape[-1]
    view = x.reshape(rows, k, features)
    if x.device.type == "cpu":
        if p == 1:
            inner = view.abs().sum(2, dtype=dtype)
        else:
            inner = torch.linalg.vector_norm(view, p, dim=2, dtype=dtype)  # (rows, K)
        norms = [torch.linalg.vector_norm(c.contiguous(), p) for c in inner.unbind(1)]
        return torch.stack(norms), rows
    return torch.linalg.vector_norm(view, p, dim=(0, 2), dtype=dtype), rows


class _Probed(nn.Module):
    """A fused layer whose input energy INSGD may measure (its `probe`, None = off)."""

    num_members: int
    weight: nn.Parameter

    def __init__(self) -> None:
        super().__init__()
        self.probe: EnergyProbe | None = None

    def _measure(self, x: Tensor) -> None:
        # As the solo hook: only training forwards with grad on count as steps of training.
        probe = self.probe
        if (
            probe is not None
            and self.training
            and torch.is_grad_enabled()
            and self.weight.requires_grad
        ):
            probe.record(x)


class FusedLinear(_Probed):
    """K `nn.Linear(in_features, out_features)` as one baddbmm on (..., K*in) inputs."""

    def __init__(self, num_members: int, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_members, out_features)) if bias else None

    @classmethod
    def from_members(cls, members: Sequence[nn.Linear]) -> FusedLinear:
        first = members[0]
        return cls(len(members), first.in_features, first.out_features, first.bias is not None)

    def forward(self, x: Tensor) -> Tensor:
        self._measure(x)
        k, lead = self.num_members, x.shape[:-1]
        xs = x.reshape(-1, k, self.in_features).transpose(0, 1)  # (K, N, in)
        out = _BatchedLinear.apply(xs, self.weight, self.bias)  # (K, N, out)
        return out.transpose(0, 1).reshape(*lead, k * self.out_features)

    def extra_repr(self) -> str:
        return (
            f"members={self.num_members}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


class _BatchedLinear(torch.autograd.Function):
    """y_k = x_k W_k^T + b_k for every member k, with the backward `nn.Linear` has.

    Autograd's own bmm backward would compute dW as (x^T g)^T; torch's linear backward
    computes it as g^T x (matching the layout of W^T's transposed view), a GEMM that
    rounds differently. This function computes exactly the products the solo backward
    does, so on CPU a member's gradients are its solo gradients bit for bit. Under
    autocast the forward runs in the autocast dtype and the backward in the gradient's
    dtype, as the casts around a solo autocast linear make them.
    """

    @staticmethod
    def forward(ctx: Any, xs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(xs, weight)
        ctx.has_bias = bias is not None
        weight_t = weight.transpose(1, 2)
        if bias is None:
            return torch.bmm(xs, weight_t)
        return torch.baddbmm(bias.unsqueeze(1), xs, weight_t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        xs, weight = ctx.saved_tensors
        dtype = grad.dtype
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight.to(dtype)).to(xs.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(grad.transpose(1, 2), xs.to(dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.contiguous().sum(dim=1).to(weight.dtype)
        return grad_x, grad_w, grad_b


class FusedConv2d(_Probed):
    """K `nn.Conv2d` (groups=1, zero padding) as one convolution with K groups.

    `grouped`: True always groups, False runs one convolution per member, None (default)
    groups everywhere but on CPU (see the module docstring).
    """

    def __init__(
        self,
        num_members: int,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        *,
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        bias: bool,
    ):
        super().__init__()
        self.num_members = num_members
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.weight = nn.Parameter(
            torch.empty(num_members * out_channels, in_channels, *kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(num_members * out_channels)) if bias else None
        self.grouped: bool | None = None

    @classmethod
    def from_members(cls, members: Sequence[nn.Conv2d]) -> FusedConv2d:
        first = members[0]
        return cls(
            len(members),
            first.in_channels,
            first.out_channels,
            tuple(first.kernel_size),
            stride=tuple(first.stride),
            padding=first.padding if isinstance(first.padding, str) else tuple(first.padding),
            dilation=tuple(first.dilation),
            bias=first.bias is not None,
        )

    def forward(self, x: Tensor) -> Tensor:
        self._measure(x)
        grouped = self.grouped if self.grouped is not None else x.device.type != "cpu"
        if not grouped:
            k = self.num_members
            xs = x.chunk(k, dim=1)
            ws = self.weight.chunk(k, dim=0)
            bs = self.bias.chunk(k, dim=0) if self.bias is not None else (None,) * k
            return torch.cat(
                [
                    F.conv2d(xi, wi, bi, self.stride, self.padding, self.dilation)  # type: ignore[arg-type]
                    for xi, wi, bi in zip(xs, ws, bs, strict=True)
                ],
                dim=1,
            )
        return F.conv2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,  # type: ignore[arg-type]
            self.dilation,
            self.num_members,
        )

    def extra_repr(self) -> str:
        return (
            f"members={self.num_members}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


class FusedBatchNorm2d(nn.Module):
    """K `nn.BatchNorm2d(C)` as one over K*C channels (BN never mixes channels)."""

    def __init__(self, num_members: int, num_features: int, *, eps: float, momentum: float):
        super().__init__()
        self.num_members = num_members
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        total = num_members * num_features
        self.weight = nn.Parameter(torch.empty(total))
        self.bias = nn.Parameter(torch.empty(total))
        self.register_buffer("running_mean", torch.zeros(total))
        self.register_buffer("running_var", torch.ones(total))
        self.register_buffer("num_batches_tracked", torch.zeros(num_members, dtype=torch.long))

    @classmethod
    def from_members(cls, members: Sequence[nn.BatchNorm2d]) -> FusedBatchNorm2d:
        first = members[0]
        assert first.momentum is not None  # checked by the converter
        return cls(len(members), first.num_features, eps=first.eps, momentum=first.momentum)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"members={self.num_members}, {self.num_features}, eps={self.eps}"


class FusedDropout(nn.Module):
    """K `nn.Dropout(p)`, member k's mask drawn from `generators[k]`.

    The mask of member k is drawn exactly as `torch.nn.functional.dropout` draws it on the
    CPU (an uninitialised tensor of the member's activation shape, `bernoulli_(1 - p)`,
    divided by 1 - p), so a CPU member whose generator carries its solo run's torch state
    gets the solo run's masks. `generators` is set by the trainer
    (`FusedNet.set_generators`); without it the default generator is used for all.
    """

    def __init__(self, num_members: int, p: float):
        super().__init__()
        self.num_members = num_members
        self.p = p
        self.generators: Sequence[torch.Generator | None] = (None,) * num_members

    @classmethod
    def from_members(cls, members: Sequence[nn.Dropout]) -> FusedDropout:
        return cls(len(members), members[0].p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            return x
        if self.p == 1.0:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        k = self.num_members
        view = x.reshape(x.shape[0], k, x.shape[1] // k, *x.shape[2:])
        member_shape = (x.shape[0], *view.shape[2:])
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        keep = 1.0 - self.p
        masks = []
        for gen in self.generators:
            noise = torch.empty(member_shape, dtype=x.dtype, device=x.device, memory_format=fmt)
            noise.bernoulli_(keep, generator=gen)
            masks.append(noise.div_(keep))
        return (view * torch.stack(masks, dim=1)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"members={self.num_members}, p={self.p}"


class FusedPadShortcut(nn.Module):
    """ResNet option A (strided identity, zero-padded channels), member by member."""

    def __init__(self, num_members: int, stride: int, pad_before: int, pad_after: int):
        super().__init__()
        self.num_members = num_members
        self.stride = stride
        self.pad_before = pad_before
        self.pad_after = pad_after

    @classmethod
    def from_members(cls, members: Sequence[nn.Module]) -> FusedPadShortcut:
        first = members[0]
        return cls(len(members), first.stride, first.pad_before, first.pad_after)

    def forward(self, x: Tensor) -> Tensor:
        k = self.num_members
        view = x.reshape(x.shape[0], k, x.shape[1] // k, *x.shape[2:])
        view = view[:, :, :, :: self.stride, :: self.stride]
        out = F.pad(view, (0, 0, 0, 0, self.pad_before, self.pad_after))
        out = out.reshape(out.shape[0], -1, *out.shape[3:])
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out
