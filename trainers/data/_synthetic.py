"""Random but learnable images for benchmarks and for tests of the training loop.

Each class has a random template; an image is the mean of its class template
and uniform noise, so throughput matches real data of the same shape and a
model can still learn (a loss that never falls would hide training bugs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def synthetic_arrays(
    shape: Sequence[int], num_classes: int, count: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 images of `shape` (C, S, S) and int64 labels, drawn from `generator`."""
    templates = torch.randint(0, 256, (num_classes, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    noise = torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)
    images = (templates[labels] >> 1) + (noise >> 1)  # the mean, without overflowing uint8
    return images.numpy(), labels.numpy()


def check_synthetic_options(
    shape: Sequence[int], num_classes: int, num_train: int, num_val: int
) -> tuple[int, ...]:
    """Validate the options; return the shape as a tuple."""
    shape = tuple(shape)
    if (
        len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
        or shape[1] != shape[2]
    ):
        raise ValueError(f"synthetic shape must be (channels, size, size); got {shape!r}")
    for label, value, minimum in (
        ("num_classes", num_classes, 2),
        ("num_train", num_train, 1),
        ("num_val", num_val, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"synthetic {label} must be an integer >= {minimum}; got {value!r}")
    return shape
