"""SGD and INSGD for every member of a `FusedNet` at once, each with its own hyperparameters.

Member k of the bundle follows exactly the rule of its solo optimizer
(`torch.optim.SGD` or `trainers.insgd.INSGD`, see that class for the formulas), with its
own lr, and for INSGD its own norm (l1/l2), eps and beta; momentum, dampening, Nesterov,
weight decay, the normalizer and the granularity are the bundle's.

How the work is batched, and why it stays equal to the solo update:

- Input power P of every normalized layer lives in one float32 matrix (K, T), a row per
  member and a column per layer (or per input channel of a conv at "channel"
  granularity). Energies from the layers' `EnergyProbe`s are concatenated into S (K, T),
  then P_1 = S or P = beta*P + (1-beta)*S, done once per distinct beta on its rows (beta 1,
  the frozen control, leaves P at P_1). f = max(log P, eps_k) or eps_k + P is one
  elementwise pass with a per-row eps (max is exact, so a row equals its solo scalar op).
- The divisor D is f for INSGD rows and exactly 1.0 for SGD rows: grad / 1.0 is grad,
  bit for bit, so SGD and INSGD members share one division.
- Division, weight decay and momentum use the solo code (`trainers.insgd_functional`) on
  the whole (K, ...) tensors: their scalars are shared by all members and every operation
  is elementwise. Only the last operation, W -= lr * g, depends on the member: it runs once
  per distinct lr on the member slices (views), with the same fused multiply-add as solo.
  A member that is no longer `active` (diverged) is left out of that last operation.

Nothing here reads a tensor on the host; the foreach kernels keep the launches per step to
a handful plus one per distinct lr and beta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainers.fused._layers import EnergyProbe, FusedConv2d, FusedLinear
from trainers.fused._model import FusedNet
from trainers.input_energy import NORM_POWERS
from trainers.insgd import check_number
from trainers.insgd_functional import _scaled_decayed_grads, _update_momentum

OPTIMIZERS = ("sgd", "insgd")
NORMALIZERS = ("log", "nlms")
GRANULARITIES = ("layer", "channel")


@dataclass(frozen=True)
class MemberRule:
    """One member's optimizer: plain SGD, or INSGD with its norm, eps and beta.

    `beta` may be 1 (P stays P_1, a frozen control); for SGD members norm, eps and beta
    are ignored.
    """

    optimizer: str
    lr: float
    norm: str = "l2"
    eps: float = 0.01
    beta: float = 0.9

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.norm not in NORM_POWERS:
            raise ValueError(f"norm must be one of {', '.join(NORM_POWERS)}; got {self.norm!r}")
        check_number("lr", self.lr, low=0.0)
        check_number("eps", self.eps, low=0.0, low_open=True)
        check_number("beta", self.beta, low=0.0, high=1.0, high_open=False)


@dataclass
class _Layer:
    """A normalized weight: its probe, its parameter's index and its columns of P."""

    name: str
    module: FusedLinear | FusedConv2d
    probe: EnergyProbe
    param_index: int
    offset: int
    width: int
    per_channel: bool
    has_power: bool = False


class FusedINSGD:
    """The optimizer of a `FusedNet`: `rules[k]` is member k's SGD or INSGD.

    Not a `torch.optim.Optimizer`: its state is per member (rows), which torch's param-group
    machinery cannot express. `lrs[k]` is the lr member k's next step uses (the trainer
    sets it from the schedule); `active[k]` False freezes member k.
    """

    def __init__(
        self,
        net: FusedNet,
        rules: Sequence[MemberRule],
        *,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        normalizer: str = "log",
        granularity: str = "layer",
    ) -> None:
        k = net.num_members
        if len(rules) != k:
            raise ValueError(f"{len(rules)} optimizer rules for {k} members")
        check_number("momentum", momentum, low=0.0, high=1.0)
        check_number("dampening", dampening, low=0.0, high=1.0, high_open=False)
        check_number("weight_decay", weight_decay, low=0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {', '.join(NORMALIZERS)}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}")
        self.net = net
        self.num_members = k
        self.rules = tuple(rules)
        self.settings = {
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "normalizer": normalizer,
            "granularity": granularity,
        }
        self.lrs = [float(r.lr) for r in rules]
        self.active = [True] * k
        self.params: list[tuple[nn.Parameter, tuple[int, ...]]] = [
            (p, tuple(net.member_shapes[name])) for name, p in net.net.named_parameters()
        ]
        self.momentum_buffers: list[Tensor | None] = [None] * len(self.params)
        self.input_power: Tensor | None = None

        insgd = [i for i, r in enumerate(rules) if r.optimizer == "insgd"]
        self._layers: list[_Layer] = []
        if insgd:
            powers = {NORM_POWERS[rules[i].norm] for i in insgd}
            index_of = {id(p): i for i, (p, _) in enumerate(self.params)}
            offset = 0
            for name, module in net.probed_layers():
                is_conv = isinstance(module, FusedConv2d)
                per_channel = is_conv and granularity == "channel"
                probe = EnergyProbe(k, powers, is_conv=is_conv, per_channel=per_channel)
                module.probe = probe
                width = module.in_channels if per_channel else 1
                self._layers.append(
                    _Layer(
                        name, module, probe, index_of[id(module.weight)], offset, width, per_channel
                    )
                )
                offset += width
        self._width = sum(layer.width for layer in self._layers)
        # Betas of SGD rows do not matter: they join the first INSGD member's group.
        default_beta = rules[insgd[0]].beta if insgd else 0.0
        self._betas = [r.beta if r.optimizer == "insgd" else default_beta for r in rules]
        self._constants: dict[str, Any] | None = None

    # -- per-member constants on the device ---------------------------------------------

    def _consts(self, device: torch.device) -> dict[str, Any]:
        if self._constants is None or self._constants["device"] != device:
            k, rules = self.num_members, self.rules
            groups = []
            for beta in sorted(set(self._betas)):
                rows = [i for i, b in enumerate(self._betas) if b == beta]
                index = None if len(rows) == k else torch.tensor(rows, device=device)
                groups.append((beta, index))
            self._constants = {
                "device": device,
                "eps": torch.tensor([[r.eps] for r in rules], dtype=torch.float32, device=device),
                "insgd": torch.tensor([[r.optimizer == "insgd"] for r in rules], device=device),
                "l2": torch.tensor([[r.norm == "l2"] for r in rules], device=device),
                "beta_groups": groups,
            }
        return self._constants

    # -- the step -----------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p, _ in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """Update P from the energies since the last step, then every active member."""
        k = self.num_members
        divisors = self._divisors()
        params: list[Tensor] = []
        grads: list[Tensor] = []
        bufs: list[Tensor | None] = []
        divs: list[Tensor | None] = []
        at: list[int] = []
        for i, (p, shape) in enumerate(self.params):
            if p.grad is None:
                continue
            params.append(p.view(k, *shape))
            grads.append(p.grad.view(k, *shape))
            bufs.append(self.momentum_buffers[i])
            divs.append(divisors.get(i))
            at.append(i)
        if not params:
            return
        s = self.settings
        g = _scaled_decayed_grads(params, grads, divs, s["weight_decay"])
        if s["momentum"] != 0:
            new_bufs = _update_momentum(g, bufs, s["momentum"], s["dampening"])
            for i, buf in zip(at, new_bufs, strict=True):
                self.momentum_buffers[i] = buf
            if s["nesterov"]:
                g = list(torch._foreach_add(g, new_bufs, alpha=s["momentum"]))
            else:
                g = new_bufs
        by_lr: dict[float, list[int]] = {}
        for member, lr in enumerate(self.lrs):
            if self.active[member]:
                by_lr.setdefault(lr, []).append(member)
        for lr, members in by_lr.items():
            torch._foreach_add_(
                [p[m] for m in members for p in params],
                [t[m] for m in members for t in g],
                alpha=-lr,
            )

    def _divisors(self) -> dict[int, Tensor]:
        """{parameter index: D viewed over its (K, ...) weight} for layers with a P."""
        if not self._layers:
            return {}
        energies = [layer.probe.finish() for layer in self._layers]
        present = [e is not None for e in energies]
        if any(present):
            some = next(e for e in energies if e is not None)
            consts = self._consts(next(iter(some.values())).device)
            columns = [
                self._combine(e, layer, consts) if e is not None else None
                for e, layer in zip(energies, self._layers, strict=True)
            ]
            self._update_power(columns)
        power = self.input_power
        ready = [layer for layer in self._layers if layer.has_power]
        if power is None or not ready:
            return {}
        consts = self._consts(power.device)
        if self.settings["normalizer"] == "log":
            f = torch.maximum(torch.log(power), consts["eps"])
        else:
            f = power + consts["eps"]
        d = torch.where(consts["insgd"], f, 1.0)
        out = {}
        for layer in ready:
            shape = self.params[layer.param_index][1]
            cols = d[:, layer.offset : layer.offset + layer.width]
            if layer.per_channel:  # weight (O, C, *kernel): f over the C axis
                view = cols.view(self.num_members, 1, layer.width, *([1] * (len(shape) - 2)))
            else:
                view = cols.view(self.num_members, *([1] * len(shape)))
            weight = self.params[layer.param_index][0]
            if view.dtype != weight.dtype or view.device != weight.device:
                view = view.to(device=weight.device, dtype=weight.dtype)
            out[layer.param_index] = view
        return out

    def _combine(
        self, energies: dict[int, Tensor], layer: _Layer, consts: dict[str, Any]
    ) -> Tensor:
        """One (K, width) block of S: each row with its member's exponent."""
        k = self.num_members
        if len(energies) == 1:
            (s,) = energies.values()
            return s.reshape(k, layer.width)
        return torch.where(
            consts["l2"], energies[2].reshape(k, layer.width), energies[1].reshape(k, layer.width)
        )

    def _update_power(self, columns: list[Tensor | None]) -> None:
        if all(c is not None for c in columns) and all(layer.has_power for layer in self._layers):
            s = torch.cat(columns, dim=1)  # type: ignore[arg-type]
            assert self.input_power is not None
            self._ema(self.input_power, s)
            return
        if all(c is not None for c in columns) and self.input_power is None:
            self.input_power = torch.cat(columns, dim=1)  # type: ignore[arg-type]  # P_1 = s_1
            for layer in self._layers:
                layer.has_power = True
            return
        # Some layer had no training forward since the last step (or has no P yet):
        # column by column, as the solo optimizer handles each layer on its own.
        first = next(c for c in columns if c is not None)
        if self.input_power is None:
            self.input_power = torch.zeros(
                self.num_members, self._width, dtype=torch.float32, device=first.device
            )
        for layer, s in zip(self._layers, columns, strict=True):
            if s is None:
                continue
            cols = self.input_power[:, layer.offset : layer.offset + layer.width]
            if layer.has_power:
                self._ema(cols, s)
            else:
                cols.copy_(s)
                layer.has_power = True

    def _ema(self, power: Tensor, s: Tensor) -> None:
        """P <- beta*P + (1-beta)*s on each beta's rows, as `update_input_power` does."""
        for beta, rows in self._consts(power.device)["beta_groups"]:
            if beta == 1.0:
                continue  # frozen: P stays P_1
            if rows is None:
                power.mul_(beta).add_(s, alpha=1.0 - beta)
            else:
                part = power.index_select(0, rows)
                part.mul_(beta).add_(s.index_select(0, rows), alpha=1.0 - beta)
                power.index_copy_(0, rows, part)

    # -- members ------------------------------------------------------------------------

    @torch.no_grad()
    def park(self, member: int) -> None:
        """Freeze member `member` for good: no more updates, its P and momentum zeroed."""
        self.active[member] = False
        if self.input_power is not None:
            self.input_power[member].zero_()
        for buf in self.momentum_buffers:
            if buf is not None:
                buf[member].zero_()

    def remove_probes(self) -> None:
        """Stop measuring inputs (the model may outlive the optimizer)."""
        for layer in self._layers:
            layer.module.probe = None
            layer.probe.reset()

    @torch.no_grad()
    def normalizers(self) -> dict[str, Tensor]:
        """The current f per layer name: (K,) or (K, C) rows, INSGD rows only meaningful."""
        power = self.input_power
        if power is None:
            return {}
        consts = self._consts(power.device)
        if self.settings["normalizer"] == "log":
            f = torch.maximum(torch.log(power), consts["eps"])
        else:
            f = power + consts["eps"]
        out = {}
        for layer in self._layers:
            if layer.has_power:
                cols = f[:, layer.offset : layer.offset + layer.width]
                out[layer.name] = cols.clone() if layer.per_channel else cols[:, 0].clone()
        return out

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "rules": [asdict(r) for r in self.rules],
            "settings": dict(self.settings),
            "input_power": self.input_power,
            "has_power": [layer.has_power for layer in self._layers],
            "momentum_buffers": list(self.momentum_buffers),
            "active": list(self.active),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rules = [asdict(r) for r in self.rules]
        if state["rules"] != rules or state["settings"] != self.settings:
            raise ValueError("optimizer state was saved for other members or settings")
        if len(state["momentum_buffers"]) != len(self.params) or len(state["has_power"]) != len(
            self._layers
        ):
            raise ValueError("optimizer state was saved for another model")
        device = self.params[0][0].device
        power = state["input_power"]
        self.input_power = (
            None if power is None else power.to(device=device, dtype=torch.float32, copy=True)
        )
        for layer, has in zip(self._layers, state["has_power"], strict=True):
            layer.has_power = bool(has)
        self.momentum_buffers = [
            None if b is None else b.to(device=p.device, dtype=p.dtype, copy=True)
            for b, (p, _) in zip(state["momentum_buffers"], self.params, strict=True)
        ]
        self.active = [bool(a) for a in state["active"]]
