"""torchvision's ResNet-50, adapted only where a dataset needs it.

The architecture and initialization are torchvision's own
(`resnet50(weights=None, num_classes=...)`); a dataset with other than three
channels gets a new first convolution of the same shape and init, and
`batchnorm=False` swaps every BatchNorm for an Identity via `norm_layer`.
"""

from __future__ import annotations

from torch import nn


def resnet50(
    in_channels: int,
    num_classes: int,
    *,
    batchnorm: bool = True,
    zero_init_residual: bool = False,
) -> nn.Module:
    import torchvision  # imported here: the small models should not pay for it

    norm_layer = nn.BatchNorm2d if batchnorm else nn.Identity
    model = torchvision.models.resnet50(
        weights=None,
        num_classes=num_classes,
        norm_layer=norm_layer,
        zero_init_residual=zero_init_residual and batchnorm,
    )
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
