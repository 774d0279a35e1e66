"""The small networks of the INSGD paper, plus an MLP for the 8x8 digits.

Layer lists follow docs/insgd.md exactly (3x3 convolutions with
padding 1 and no bias, as in the paper's figures). The FC input width is
computed from the image size, so the same net runs on 32x32 CIFAR (1024
features), 28x28 MNIST (1568) and 8x8 digits. Initialization is PyTorch's
default, which is what the paper's toy nets used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainers.models._layers import conv1x1, conv3x3, conv_output_size, norm2d


class MLP(nn.Module):
    """Flatten, then Linear+ReLU for each hidden width, then a Linear classifier."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ToyCNN(nn.Module):
    """The paper's CIFAR toy CNN.

    conv 3->8 BN; conv 8->16 s2 BN ReLU, plus a 1x1 s2 conv+BN shortcut from
    the first block's output; conv 16->32 s2 BN ReLU; conv 32->64 s2 BN
    Dropout(0.2) ReLU; FC. The shortcut is added after the ReLU, as in the paper.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        *,
        batchnorm: bool = True,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 8)
        self.bn1 = norm2d(8, batchnorm)
        self.conv2 = conv3x3(8, 16, stride=2)
        self.bn2 = norm2d(16, batchnorm)
        self.shortcut = nn.Sequential(conv1x1(8, 16, stride=2), norm2d(16, batchnorm))
        self.conv3 = conv3x3(16, 32, stride=2)
        self.bn3 = norm2d(32, batchnorm)
        self.conv4 = conv3x3(32, 64, stride=2)
        self.bn4 = norm2d(64, batchnorm)
        self.dropout = nn.Dropout(dropout)
        size = image_size
        for _ in range(3):
            size = conv_output_size(size, 3, 2, 1)
        self.fc = nn.Linear(64 * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = F.relu(self.bn2(self.conv2(x))) + self.shortcut(x)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.dropout(self.bn4(self.conv4(x))))
        return self.fc(torch.flatten(x, 1))


class MnistToy(nn.Module):
    """The paper's older MNIST toy net (no normalization layers at all).

    conv 1->8; conv 8->16 s2 ReLU; conv 16->32 s2 ReLU; FC (1568->10 on 28x28).
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 8)
        self.conv2 = conv3x3(8, 16, stride=2)
        self.conv3 = conv3x3(16, 32, stride=2)
        size = image_size
        for _ in range(2):
            size = conv_output_size(size, 3, 2, 1)
        self.fc = nn.Linear(32 * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(x, 1))
