"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-D-W for small images.

Pre-activation blocks (BN-ReLU-conv), widths 16W/32W/64W in three groups of
(D-4)/6 blocks, a 1x1 projection where the shape changes, and dropout between
the two convolutions of a block (0 by default, 0.3 in the paper's best runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.models._layers import conv1x1, conv3x3, kaiming_init_, norm2d


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus identity or 1x1 projection.

    The projection sees the pre-activated input, as in the authors' code.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dropout: float, batchnorm: bool
    ) -> None:
        super().__init__()
        self.bn1 = norm2d(in_channels, batchnorm)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = norm2d(out_channels, batchnorm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = conv1x1(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        shortcut = x if self.projection is None else self.projection(pre)
        return out + shortcut


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        width: int,
        in_channels: int,
        num_classes: int,
        *,
        dropout: float = 0.0,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"wide ResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...); got {depth}"
            )
        if width < 1:
            raise ValueError(f"wide ResNet width must be >= 1; got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        blocks = (depth - 4) // 6
        self.conv1 = conv3x3(in_channels, 16)
        groups: list[nn.Module] = []
        channels = 16
        for index, group_width in enumerate((16 * width, 32 * width, 64 * width)):
            layers = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(WideBlock(channels, group_width, stride, dropout, batchnorm))
                channels = group_width
            groups.append(nn.Sequential(*layers))
        self.groups = nn.Sequential(*groups)
        self.bn = norm2d(channels, batchnorm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init_(self, mode="fan_out")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.conv1(x))
        x = self.pool(F.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))
