"""INSGD: SGD whose Linear/Conv weight gradients are divided by a function of the layer's
input energy (Atici, Pan, Cetin, arXiv 2212.09921; the published rule of docs/insgd.md).

The optimizer takes the *model*, not a parameter list, because it must see
each layer's input: it hooks every nn.Linear and nn.Conv1d/2d/3d (see
`trainers.input_energy`) and keeps all per-layer state in `self.state`, keyed
by parameter, never on the modules or parameters themselves. The arithmetic
lives in `trainers.insgd_functional`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from trainers.input_energy import (
    GRANULARITY_CHOICES,
    NORM_POWERS,
    Site,
    build_sites,
    finish_energies,
)
from trainers.insgd_functional import divisors_for, insgd, normalizer, update_input_power

__all__ = ["INSGD"]

NORMALIZER_CHOICES = ("log", "nlms")
_FOREACH_DEVICES = ("cuda", "xpu")


class INSGD(torch.optim.Optimizer):
    """Input Normalized SGD, with SGD's momentum, dampening, Nesterov and weight decay.

    For each normalized weight W (of nn.Linear, nn.Conv1d/2d/3d) at step t::

        s_t = energy of the layer's input over the training forwards since the last step
        P_t = s_t (first time)  or  beta * P_{t-1} + (1 - beta) * s_t
        f_t = max(log P_t, eps)  ("log")  or  eps + P_t  ("nlms")
        g = grad / f_t;  g = g + weight_decay * W
        b = g (first step)  or  momentum * b + (1 - dampening) * g
        g = g + momentum * b (nesterov)  or  b;   W = W - lr * g

    Every other parameter (biases, norm layers, a layer that never ran a
    training forward) gets the same update without the division, which is
    exactly `torch.optim.SGD`.

    Args:
        model: the module being trained; all of `model.parameters()` are optimized.
        lr: learning rate (mu), >= 0.
        norm: "l2" (s = sum of x^2) or "l1" (s = sum of |x|), per sample, averaged.
        eps: floor of the log normalizer / additive term of "nlms", > 0.
        beta: momentum of the input power P, in [0, 1]. The paper uses beta = momentum.
            beta = 1 is the "frozen normalizer" control, not a setting of the published
            method: P stays P_1 = s_1 forever, so each layer's step is rescaled once, by
            f(P_1), at initialization. Comparing it with beta < 1 separates what INSGD
            gains from tracking the input energy from what a fixed per-layer rescale
            of the learning rate gives. Once a layer has P_1 its hook stops measuring.
        momentum, dampening, nesterov, weight_decay: as in `torch.optim.SGD`.
        granularity: "layer" (one P per layer) or "channel" (one P per conv input channel).
        normalizer: "log" (the published f_eps) or "nlms" (eps + P).
        foreach: use the multi-tensor kernels; None picks them when every parameter
            is on CUDA/XPU, as torch's SGD does.

    State per normalized weight: `state[W]["input_power"]` (float32; 0-d, or a
    vector over C_in for "channel" convs) and, as in SGD, `momentum_buffer`.
    `state_dict()` saves both; energies measured since the last `step()` are
    not saved. Call `remove_hooks()` when done with the optimizer but not the model.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        *,
        norm: str = "l2",
        eps: float = 0.01,
        beta: float = 0.9,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        granularity: str = "layer",
        normalizer: str = "log",
        foreach: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _check_choice("norm", norm, tuple(NORM_POWERS))
        _check_choice("granularity", granularity, GRANULARITY_CHOICES)
        _check_choice("normalizer", normalizer, NORMALIZER_CHOICES)
        check_number("lr", lr, low=0.0)
        check_number("eps", eps, low=0.0, low_open=True)
        check_number("beta", beta, low=0.0, high=1.0, high_open=False)
        check_number("momentum", momentum, low=0.0, high=1.0)
        check_number("dampening", dampening, low=0.0, high=1.0, high_open=False)
        check_number("weight_decay", weight_decay, low=0.0)
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "nesterov needs momentum > 0 and dampening == 0, "
                f"got momentum={momentum!r}, dampening={dampening!r}"
            )
        if foreach is not None and not isinstance(foreach, bool):
            raise ValueError(f"foreach must be True, False or None, got {foreach!r}")

        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "eps": eps,
            "beta": beta,
            "normalizer": normalizer,
            "foreach": foreach,
        }
        super().__init__(list(model.parameters()), defaults)
        self.norm = norm
        self.granularity = granularity
        self._sites: dict[nn.Parameter, Site] = build_sites(
            model, norm=norm, granularity=granularity
        )
        handles = [h for site in self._sites.values() for h in site.handles]
        # Hooks hold only their Site, not the optimizer, so a dropped optimizer is
        # collected; this then detaches its hooks from the model that outlives it.
        self._finalizer = weakref.finalize(self, _remove_handles, handles)

    # -- hooks ---------------------------------------------------------------------------

    def remove_hooks(self) -> None:
        """Stop measuring inputs; later steps keep the last P of each layer."""
        self._finalizer()
        for site in self._sites.values():
            site.reset()

    @property
    def tracked_names(self) -> list[str]:
        """Names (in `model.named_modules()`) of the layers whose weights are normalized."""
        return [site.name for site in self._sites.values()]

    # -- the step ------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Update P from the inputs seen since the last step, then apply the update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        foreach = group["foreach"]
        if foreach is None:
            foreach = all(
                p.device.type in _FOREACH_DEVICES and type(p) in (Tensor, nn.Parameter)
                for p in group["params"]
            )
        self._consume_energies(group, foreach)

        params: list[Tensor] = []
        grads: list[Tensor] = []
        bufs: list[Tensor | None] = []
        divisors: list[Tensor | None] = []
        norm_at: list[int] = []
        norm_sites: list[Site] = []
        norm_powers: list[Tensor] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("INSGD does not support sparse gradients")
            state = self.state[p]
            site = self._sites.get(p)
            if site is not None and "input_power" in state:
                norm_at.append(len(params))
                norm_sites.append(site)
                norm_powers.append(state["input_power"])
            params.append(p)
            grads.append(p.grad)
            bufs.append(state.get("momentum_buffer"))
            divisors.append(None)

        fs = normalizer(norm_powers, eps=group["eps"], kind=group["normalizer"], foreach=foreach)
        norm_params = [params[i] for i in norm_at]
        for i, d in zip(norm_at, divisors_for(norm_sites, fs, norm_params), strict=True):
            divisors[i] = d

        insgd(
            params,
            grads,
            bufs,
            divisors,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            foreach=foreach,
        )
        if group["momentum"] != 0:
            for p, buf in zip(params, bufs, strict=True):
                self.state[p]["momentum_buffer"] = buf

    def _consume_energies(self, group: dict[str, Any], foreach: bool) -> None:
        """P_t from s_t for every layer of the group that ran training forwards.

        With beta == 1 a P, once set, is kept as it is (not recomputed as 1 * P + 0 * s,
        which an overflowed s would turn into NaN), and `_freeze_sites` stops the hooks
        of the layers that have one.
        """
        sites = self._group_sites(group)
        frozen = group["beta"] == 1
        old_powers: list[Tensor] = []
        energies: list[Tensor] = []
        for site, s in zip(sites, finish_energies(sites, foreach=foreach), strict=True):
            if s is None:
                continue  # no training forward since the last step: keep P
            state = self.state[site.weight]
            if "input_power" not in state:
                state["input_power"] = s  # P_1 = s_1
            elif not frozen:
                old_powers.append(state["input_power"])
                energies.append(s)
        update_input_power(old_powers, energies, beta=group["beta"], foreach=foreach)
        self._freeze_sites(group, sites)

    def _group_sites(self, group: dict[str, Any]) -> list[Site]:
        return [site for p in group["params"] if (site := self._sites.get(p)) is not None]

    def _freeze_sites(self, group: dict[str, Any], sites: list[Site]) -> None:
        """Turn measuring off for the layers whose P is fixed (beta == 1 and P exists), on
        for all others. A layer without P keeps measuring: its first training forward
        gives it P_1. Run at every step and state load, so a change of beta (by hand
        or by `load_state_dict`) reaches the hooks; changed by hand between steps, it
        reaches them only at the next step, whose forwards were measured as before.
        """
        frozen = group["beta"] == 1
        for site in sites:
            state = self.state.get(site.weight)
            site.frozen = frozen and state is not None and "input_power" in state

    # -- analysis ------------------------------------------------------------------------

    @torch.no_grad()
    def normalizers(self) -> dict[str, Tensor]:
        """The current f = normalizer(P) per layer name (0-d, or a vector over C_in).

        Layers that have no P yet (no training forward consumed by a step) are absent.
        Returns copies on the layers' devices; reading them is the caller's sync.
        """
        out: dict[str, Tensor] = {}
        for group in self.param_groups:
            for p in group["params"]:
                site = self._sites.get(p)
                power = self.state[p].get("input_power") if site is not None else None
                if site is None or power is None:
                    continue
                kind = group["normalizer"]
                (f,) = normalizer([power], eps=group["eps"], kind=kind, foreach=False)
                out[site.name] = f
        return out

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state plus the hook settings that give P its meaning."""
        sd = super().state_dict()
        sd["input_energy"] = {"norm": self.norm, "granularity": self.granularity}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore P (kept float32 on the weight's device) and the momentum buffers.

        torch's loader would cast every floating state tensor to the parameter's
        dtype; P is taken out first so a bf16 model keeps a float32 P.
        """
        settings = state_dict.get("input_energy")
        if settings is not None:
            for key in ("norm", "granularity"):
                if settings.get(key) != getattr(self, key):
                    raise ValueError(
                        f"state_dict was saved with {key}={settings.get(key)!r}, "
                        f"this optimizer has {key}={getattr(self, key)!r}"
                    )
        powers: dict[Any, Tensor] = {}
        stripped: dict[Any, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            entry = dict(entry)
            power = entry.pop("input_power", None)
            if power is not None:
                powers[key] = power
            stripped[key] = entry
        inner = {k: v for k, v in state_dict.items() if k != "input_energy"}
        inner["state"] = stripped
        super().load_state_dict(inner)

        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        by_id = dict(zip(saved_ids, params, strict=False))
        for key, power in powers.items():
            param = by_id[key]
            site = self._sites.get(param)
            if site is None or tuple(power.shape) != site.power_shape:
                raise ValueError(
                    f"state_dict has an input_power of shape {tuple(power.shape)} for a "
                    "parameter that this optimizer does not normalize that way"
                )
            self.state[param]["input_power"] = power.detach().to(
                device=param.device, dtype=torch.float32, copy=True
            )
        for group in self.param_groups:
            self._freeze_sites(group, self._group_sites(group))


def _remove_handles(handles: Iterable[Any]) -> None:
    for handle in handles:
        handle.remove()


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_number(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> None:
    """Raise ValueError naming `value` unless it is a real number in the interval (one
    message for INSGD's and the fused optimizer's hyperparameters, `trainers.fused`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) and (v > low if low_open else v >= low)
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "inf" if high == math.inf else f"{high:g}"
        raise ValueError(f"{name} must be a number in {left}{low:g}, {upper}{right}, got {value!r}")
