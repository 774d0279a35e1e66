"""K models of one architecture as one `FusedNet`, and each member's state back out of it.

`fuse_models` deep-copies the first member's module tree, keeps every container and its
`forward` code, and replaces each layer that mixes features or holds state by its fused
form (`trainers.fused._layers`); stateless per-channel layers (ReLU, pooling, Identity,
Flatten) stay as they are, because they act on packed activations exactly as on one
member's. A layer of any other type has no known fused form: fusing stops with a
ValueError naming the model and the layer, rather than guessing.

Every fused tensor keeps its member's state-dict name, and ``t.view(K, *member_shape)[k]``
is member k's tensor, so stacking members in, reading a member out (`member_state_dict`,
loadable into the solo model) and parking a finished member are all generic.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from trainers.fused._layers import (
    FusedBatchNorm2d,
    FusedConv2d,
    FusedDropout,
    FusedLinear,
    FusedPadShortcut,
)
from trainers.models._cifar_resnet import PadShortcut

#: Stateless layers that act on each channel (or element) alone: packed activations pass
#: through them unchanged.
PASSTHROUGH: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Identity,
    nn.Flatten,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
)


def _fuse_linear(members: Sequence[nn.Module]) -> nn.Module:
    return FusedLinear.from_members(members)  # type: ignore[arg-type]


def _fuse_conv(members: Sequence[nn.Module]) -> nn.Module:
    first = members[0]
    assert isinstance(first, nn.Conv2d)
    if first.groups != 1:
        raise _Unfusable(f"a grouped convolution (groups={first.groups})")
    if first.padding_mode != "zeros":
        raise _Unfusable(f"padding_mode={first.padding_mode!r}")
    return FusedConv2d.from_members(members)  # type: ignore[arg-type]


def _fuse_batchnorm(members: Sequence[nn.Module]) -> nn.Module:
    first = members[0]
    assert isinstance(first, nn.BatchNorm2d)
    if not (first.affine and first.track_running_stats) or first.momentum is None:
        raise _Unfusable("a BatchNorm2d without affine parameters, running stats or momentum")
    return FusedBatchNorm2d.from_members(members)  # type: ignore[arg-type]


def _fuse_dropout(members: Sequence[nn.Module]) -> nn.Module:
    if any(m.inplace for m in members):  # type: ignore[attr-defined]
        raise _Unfusable("an in-place Dropout")
    return FusedDropout.from_members(members)  # type: ignore[arg-type]


def _fuse_pad_shortcut(members: Sequence[nn.Module]) -> nn.Module:
    return FusedPadShortcut.from_members(members)


#: Exact module type -> builder of its fused form from the K members' modules. Exact types,
#: not isinstance: a subclass may change `forward` in ways the fused form would not follow.
CONVERTERS: dict[type[nn.Module], Callable[[Sequence[nn.Module]], nn.Module]] = {
    nn.Linear: _fuse_linear,
    nn.Conv2d: _fuse_conv,
    nn.BatchNorm2d: _fuse_batchnorm,
    nn.Dropout: _fuse_dropout,
    PadShortcut: _fuse_pad_shortcut,
}


class _Unfusable(Exception):
    """A layer that has no fused form; `fuse_models` turns it into a ValueError."""


class FusedNet(nn.Module):
    """K members of one architecture: packed input (B, K*C, ...) -> logits (B, K, classes).

    `member_shapes` maps every state-dict name to the member's shape of that tensor.
    """

    def __init__(self, net: nn.Module, num_members: int, member_shapes: dict[str, torch.Size]):
        super().__init__()
        self.net = net
        self.num_members = num_members
        self.member_shapes = dict(member_shapes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.view(out.shape[0], self.num_members, -1)

    # -- members ------------------------------------------------------------------------

    def member_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """(member state-dict name, fused tensor viewed as (K, *member_shape)), params and
        buffers, in state-dict order."""
        k = self.num_members
        for name, tensor in self.net.state_dict(keep_vars=True).items():
            yield name, tensor.view(k, *self.member_shapes[name])

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """Member `index`'s state dict (copies), loadable into the solo model."""
        return {name: t[index].detach().clone() for name, t in self.member_tensors()}

    @torch.no_grad()
    def load_member_state_dict(self, index: int, state: dict[str, Tensor]) -> None:
        """Put a solo model's state dict (or `member_state_dict`'s) into member `index`."""
        missing = set(self.member_shapes) - set(state)
        if missing:
            raise ValueError(f"member state dict lacks {', '.join(sorted(missing))}")
        for name, t in self.member_tensors():
            t[index].copy_(state[name])

    @torch.no_grad()
    def park_member(self, index: int) -> None:
        """Zero member `index`'s parameters and floating buffers: a finished member then
        computes only finite zeros alongside the others (its slot still runs)."""
        for _, t in self.member_tensors():
            if t.is_floating_point():
                t[index].zero_()

    @torch.no_grad()
    def members_finite(self) -> Tensor:
        """(K,) bool on the device: whether all of member k's floating tensors are finite."""
        flags = [
            torch.isfinite(t.reshape(self.num_members, -1)).all(dim=1)
            for _, t in self.member_tensors()
            if t.is_floating_point()
        ]
        return torch.stack(flags).all(dim=0)

    def probed_layers(self) -> list[tuple[str, FusedLinear | FusedConv2d]]:
        """The fused Linear/Conv layers whose weights INSGD normalizes, in model order."""
        return [
            (name, module)
            for name, module in self.net.named_modules()
            if isinstance(module, (FusedLinear, FusedConv2d))
        ]

    def set_conv_mode(self, grouped: bool | None) -> None:
        """`FusedConv2d.grouped` for every conv: True, False, or None (grouped but on CPU)."""
        for module in self.net.modules():
            if isinstance(module, FusedConv2d):
                module.grouped = grouped

    def set_generators(self, generators: Sequence[torch.Generator | None]) -> None:
        """Member k's dropout masks come from `generators[k]`."""
        if len(generators) != self.num_members:
            raise ValueError(f"{len(generators)} generators for {self.num_members} members")
        for module in self.net.modules():
            if isinstance(module, FusedDropout):
                module.generators = tuple(generators)


def fuse_models(models: Sequence[nn.Module], *, name: str | None = None) -> FusedNet:
    """One `FusedNet` holding `models` (same architecture, any weights) as its members.

    The members' weights and buffers are copied in; the models themselves are not changed.
    ValueError (naming `name`, the model) when a layer has no fused form or the members
    differ in structure.
    """
    if not models:
        raise ValueError("no models to fuse")
    label = name or type(models[0]).__name__
    first = models[0]
    states = [m.state_dict() for m in models]
    shapes = {key: value.shape for key, value in states[0].items()}
    for index, (model, state) in enumerate(zip(models, states, strict=True)):
        if type(model) is not type(first) or {k: v.shape for k, v in state.items()} != shapes:
            raise ValueError(
                f"cannot fuse model {label!r}: member {index} differs from member 0 in structure"
            )
    _check_no_shared_layers(first, label)

    skeleton = copy.deepcopy(first)
    k = len(models)
    replaced: dict[str, nn.Module] = {}
    for qualname, module in skeleton.named_modules():
        if any(qualname.startswith(f"{done}.") for done in replaced):
            continue
        converter = CONVERTERS.get(type(module))
        if converter is not None:
            members = [m.get_submodule(qualname) for m in models]
            try:
                fused = converter(members)
            except _Unfusable as exc:
                raise ValueError(
                    f"cannot fuse model {label!r}: layer {qualname or '(root)'!r} is {exc}, "
                    "which has no fused form"
                ) from None
            like = next(iter(members[0].parameters()), None)
            if like is not None:  # the members' dtype and device, not torch's defaults
                fused.to(device=like.device, dtype=like.dtype)
            replaced[qualname] = fused
            continue
        own_state = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        flattens_members = isinstance(module, nn.Flatten) and (
            module.start_dim != 1 or module.end_dim != -1
        )
        if isinstance(module, PASSTHROUGH) and not own_state and not flattens_members:
            continue
        if next(module.children(), None) is not None and not own_state:
            continue  # a container: its forward runs as it is on packed activations
        raise ValueError(
            f"cannot fuse model {label!r}: layer {qualname or '(root)'!r} of type "
            f"{type(module).__name__} has no fused form (fusable layers: "
            f"{', '.join(t.__name__ for t in (*CONVERTERS, *PASSTHROUGH))})"
        )
    if "" in replaced:
        skeleton = replaced.pop("")
    for qualname, fused in replaced.items():
        parent_name, _, attr = qualname.rpartition(".")
        setattr(skeleton.get_submodule(parent_name), attr, fused)

    net = FusedNet(skeleton, k, shapes)
    fused_keys = set(net.net.state_dict())
    if fused_keys != set(shapes):
        raise ValueError(
            f"cannot fuse model {label!r}: its fused form has other state "
            f"({sorted(fused_keys ^ set(shapes))})"
        )
    with torch.no_grad():
        for key, t in net.member_tensors():
            t.copy_(torch.stack([state[key] for state in states]))
    return net


def _check_no_shared_layers(model: nn.Module, label: str) -> None:
    """A stateful layer reachable under two names would be fused twice, its tie broken."""
    seen: dict[int, str] = {}
    for qualname, module in model.named_modules(remove_duplicate=False):
        if type(module) not in CONVERTERS:
            continue
        other = seen.setdefault(id(module), qualname)
        if other != qualname:
            raise ValueError(
                f"cannot fuse model {label!r}: layer {qualname!r} is the same module as "
                f"{other!r} (shared layers have no fused form)"
            )
