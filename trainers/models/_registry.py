"""`build_model`: one name per architecture, built for a dataset's shapes.

Names are validated before anything is built (`check_model_name`), so the
command line can reject a typo before a study writes a single row.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from trainers.models._cifar_resnet import resnet18, resnet20
from trainers.models._imagenet_resnet import resnet50
from trainers.models._toy import MLP, MnistToy, ToyCNN
from trainers.models._wide_resnet import WideResNet

MODEL_NAMES: tuple[str, ...] = ("mlp", "toy-cnn", "mnist-toy", "resnet20", "resnet18", "resnet50")
"""The fixed model names; wide ResNets are the pattern `WRN_PATTERN` on top of these."""

WRN_PATTERN = "wrn-D-W"
_WRN_RE = re.compile(r"wrn-(\d+)-(\d+)")


def _build_mlp(
    in_channels: int,
    image_size: int,
    num_classes: int,
    batchnorm: bool,
    hidden: Sequence[int] = (256, 128),
) -> nn.Module:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(
            f"mlp hidden widths must be a list of positive integers, e.g. hidden=[256,128]; "
            f"got {hidden!r}"
        )
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ValueError(f"mlp hidden widths must be positive integers; got {hidden!r}")
    return MLP(in_channels * image_size * image_size, num_classes, hidden)


def _build_toy_cnn(
    in_channels: int, image_size: int, num_classes: int, batchnorm: bool, dropout: float = 0.2
) -> nn.Module:
    _check_dropout(dropout)
    return ToyCNN(in_channels, image_size, num_classes, batchnorm=batchnorm, dropout=dropout)


def _check_dropout(dropout: Any) -> None:
    number = isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
    if not number or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}")


def _build_mnist_toy(
    in_channels: int, image_size: int, num_classes: int, batchnorm: bool
) -> nn.Module:
    return MnistToy(in_channels, image_size, num_classes)


def _build_resnet20(
    in_channels: int, image_size: int, num_classes: int, batchnorm: bool, shortcut: str = "A"
) -> nn.Module:
    shortcut = shortcut.upper() if isinstance(shortcut, str) else shortcut
    return resnet20(in_channels, num_classes, batchnorm=batchnorm, shortcut=shortcut)


def _build_resnet18(
    in_channels: int, image_size: int, num_classes: int, batchnorm: bool
) -> nn.Module:
    return resnet18(in_channels, num_classes, batchnorm=batchnorm)


def _build_resnet50(
    in_channels: int,
    image_size: int,
    num_classes: int,
    batchnorm: bool,
    zero_init_residual: bool = False,
) -> nn.Module:
    return resnet50(
        in_channels, num_classes, batchnorm=batchnorm, zero_init_residual=zero_init_residual
    )


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _build_mlp,
    "toy-cnn": _build_toy_cnn,
    "mnist-toy": _build_mnist_toy,
    "resnet20": _build_resnet20,
    "resnet18": _build_resnet18,
    "resnet50": _build_resnet50,
}


def _choices() -> str:
    return ", ".join((*MODEL_NAMES, f"{WRN_PATTERN} (e.g. wrn-16-4, wrn-28-10)"))


def _parse_wrn(name: str) -> tuple[int, int] | None:
    match = _WRN_RE.fullmatch(name)
    if match is None:
        return None
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
        raise ValueError(
            f"bad wide ResNet name {name!r}: depth D must be 6n+4 with n >= 1 "
            f"(10, 16, 22, 28, 40, ...) and width W >= 1"
        )
    return depth, width


def check_model_name(name: str) -> None:
    """Raise ValueError (listing the choices) unless `name` names a model."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string; got {name!r}")
    if name in _BUILDERS or _parse_wrn(name) is not None:
        return
    raise ValueError(f"unknown model {name!r}; choose one of: {_choices()}")


def _check_dims(in_channels: int, image_size: int, num_classes: int) -> None:
    for label, value, minimum in (
        ("in_channels", in_channels, 1),
        ("image_size", image_size, 1),
        ("num_classes", num_classes, 2),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{label} must be an integer >= {minimum}; got {value!r}")


def _check_options(name: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    fixed = {"in_channels", "image_size", "num_classes", "batchnorm", "depth", "width"}
    accepted = [p for p in inspect.signature(builder).parameters if p not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "none"
        raise ValueError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes: {takes}"
        )


def _build_wrn(
    depth: int,
    width: int,
    in_channels: int,
    image_size: int,
    num_classes: int,
    batchnorm: bool,
    dropout: float = 0.0,
) -> nn.Module:
    _check_dropout(dropout)
    return WideResNet(depth, width, in_channels, num_classes, dropout=dropout, batchnorm=batchnorm)


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    batchnorm: bool = True,
    **options: Any,
) -> nn.Module:
    """Build model `name` for images of `in_channels` x `image_size` x `image_size`.

    `batchnorm=False` replaces every BatchNorm with an Identity (models without
    BN, `mlp` and `mnist-toy`, are unchanged). Per-model `options`:
    mlp `hidden=(256, 128)`; toy-cnn `dropout=0.2`; resnet20 `shortcut="A"|"B"`;
    wrn-D-W `dropout=0.0`; resnet50 `zero_init_residual=False`. Any bad name,
    shape or option is a ValueError that says what is accepted.
    """
    check_model_name(name)
    _check_dims(in_channels, image_size, num_classes)
    dims = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    wrn = _parse_wrn(name)
    if wrn is not None:
        _check_options(name, _build_wrn, options)
        return _build_wrn(wrn[0], wrn[1], batchnorm=bool(batchnorm), **dims, **options)
    builder = _BUILDERS[name]
    _check_options(name, builder, options)
    return builder(batchnorm=bool(batchnorm), **dims, **options)
