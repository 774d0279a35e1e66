"""ResNets for small images: He et al.'s ResNet-20 and the common CIFAR ResNet-18.

Both keep the spatial resolution of 32x32 inputs in the stem (3x3 conv, no
max-pool) and end in global average pooling, so they run on any image size.
ResNet-20 uses He et al.'s option A shortcut by default (strided identity,
zero-padded channels: no parameters, 0.27M weights in all); option B uses a
1x1 conv + BN projection, which ResNet-18 always uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainers.models._layers import conv1x1, conv3x3, kaiming_init_, norm2d

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option A: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU (post-activation, He et al. 2016a)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, shortcut: str, batchnorm: bool
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = norm2d(out_channels, batchnorm)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = norm2d(out_channels, batchnorm)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), norm2d(out_channels, batchnorm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, stages of BasicBlocks (the first stage at stride 1), global pool, FC."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int],
        blocks: Sequence[int],
        shortcut: str,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}; got {shortcut!r}")
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = norm2d(widths[0], batchnorm)
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, width, stride, shortcut, batchnorm))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.stages(x))
        return self.fc(torch.flatten(x, 1))


def resnet20(
    in_channels: int, num_classes: int, *, batchnorm: bool = True, shortcut: str = "A"
) -> CifarResNet:
    """ResNet-20 (He et al. 2016, sec. 4.2): 3 stages x 3 blocks, 16/32/64 channels.

    Initialized like the widely used reference re-implementation: He-normal
    (fan_in) for convolutions and the classifier.
    """
    model = CifarResNet(
        in_channels,
        num_classes,
        widths=(16, 32, 64),
        blocks=(3, 3, 3),
        shortcut=shortcut,
        batchnorm=batchnorm,
    )
    kaiming_init_(model, mode="fan_in", linear=True)
    return model


def resnet18(in_channels: int, num_classes: int, *, batchnorm: bool = True) -> CifarResNet:
    """ResNet-18 for CIFAR: 3x3 stem, no max-pool, 64..512 channels, 1x1 projections.

    Initialized like torchvision's ResNets (He-normal fan_out convs, BN at 1/0).
    """
    model = CifarResNet(
        in_channels,
        num_classes,
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        shortcut="B",
        batchnorm=batchnorm,
    )
    kaiming_init_(model, mode="fan_out")
    return model
