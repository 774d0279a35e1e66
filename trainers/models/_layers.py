"""Small building blocks shared by the model definitions.

`batchnorm=False` must really take every normalization layer out of a model
(the paper's no-BN experiments are where INSGD differs most from SGD), so all
models ask `norm2d` for their normalization layer instead of constructing
`nn.BatchNorm2d` themselves.
"""

from __future__ import annotations

from torch import nn


def norm2d(channels: int, batchnorm: bool) -> nn.Module:
    """`BatchNorm2d(channels)`, or a parameter-free `Identity` when batchnorm is off."""
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A padded 3x3 convolution without bias (a following BN would cancel it)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=False)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial size after a convolution, so FC widths follow the dataset's image size."""
    return (size + 2 * padding - kernel) // stride + 1


def kaiming_init_(model: nn.Module, *, mode: str = "fan_out", linear: bool = False) -> None:
    """torchvision's ResNet convention: He-normal convs, BN at (1, 0).

    `linear=True` also gives Linear layers He-normal weights and zero bias, as
    the reference CIFAR ResNets of He et al. (and their common re-implementation) do.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif linear and isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
