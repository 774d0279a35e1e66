"""What every dataset offers the training loop: shapes, and iterators of device batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class Dataset(ABC):
    """A train/validation pair of image sets, yielding normalized float32 NCHW batches.

    Attributes: `name`, `in_channels`, `image_size` (square images), `num_classes`,
    `num_train`, `num_val`, `device` (where batches are delivered), `augment`,
    and `mean`/`std` (per channel, in raw 0..255 pixel units: x = (raw - mean) / std).
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    num_train: int
    num_val: int
    device: torch.device
    augment: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @abstractmethod
    def train_batches(
        self, batch_size: int, generator: torch.Generator | None = None, *, drop_last: bool = True
    ) -> Iterator[Batch]:
        """One epoch of shuffled (and, if enabled, augmented) batches.

        All randomness comes from `generator` (a CPU or a device generator;
        None uses the dataset's own generator seeded with `seed`), so the same
        generator state gives the same batches. With `drop_last` the final
        partial batch is dropped, so every step sees a full batch (stable
        BatchNorm statistics, one compiled shape); a training set smaller than
        one batch is still one batch.
        """

    @abstractmethod
    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole validation set in order, unaugmented, the last batch possibly partial."""

    def steps_per_epoch(self, batch_size: int, *, drop_last: bool = True) -> int:
        """How many batches `train_batches(batch_size, drop_last=drop_last)` yields."""
        return len(batch_bounds(self.num_train, batch_size, drop_last))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, shape=({self.in_channels}, "
            f"{self.image_size}, {self.image_size}), num_classes={self.num_classes}, "
            f"num_train={self.num_train}, num_val={self.num_val}, device={str(self.device)!r}, "
            f"augment={self.augment})"
        )


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


def batch_bounds(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """(start, stop) of each batch over n samples; see `Dataset.train_batches` for drop_last."""
    check_batch_size(batch_size)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [(start, min(start + batch_size, stop)) for start in range(0, stop, batch_size)]


def seed_from(generator: torch.Generator) -> int:
    """Draw a 63-bit seed from `generator` (for a CPU-only consumer such as a DataLoader)."""
    draw = torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device)
    return int(draw.item())
