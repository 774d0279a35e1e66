"""Batched crop and flip as tensor ops on the data's device (the airbench approach).

A whole batch is padded once, each image's crop is gathered with two
`torch.gather` calls, and flips are one `torch.where`: no per-sample Python,
no host round trips, the same code on CPU and CUDA. Offsets and flip masks are
passed in, so the caller decides where the randomness comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_at(padded: torch.Tensor, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop image b of `padded` (B, C, H', W') at rows oy[b]:oy[b]+height, cols ox[b]:ox[b]+width.

    `offsets` is (B, 2) integer (oy, ox) on the same device.
    """
    batch, channels, padded_h, padded_w = padded.shape
    offsets = offsets.to(torch.int64)
    rows = offsets[:, 0:1] + torch.arange(height, device=padded.device)  # (B, height)
    cols = offsets[:, 1:2] + torch.arange(width, device=padded.device)  # (B, width)
    rows = rows[:, None, :, None].expand(batch, channels, height, padded_w)
    out = padded.gather(2, rows)
    cols = cols[:, None, None, :].expand(batch, channels, height, width)
    return out.gather(3, cols)


def random_crop(images: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) for a batch: zero-pad by `padding`, crop back.

    `offsets` (B, 2) holds each image's top-left corner in the padded image,
    in [0, 2 * padding]. Zero padding is applied to raw pixels (black), as
    torchvision does before normalization.
    """
    if padding == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (padding, padding, padding, padding))
    return crop_at(padded, offsets, height, width)


def random_flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror image b left-right where mask[b] is True."""
    return torch.where(mask.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)
