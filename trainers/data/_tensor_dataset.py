"""The fast loader: a small image set held on the training device as uint8 tensors.

Every set that fits in memory (digits, mnist5k, CIFAR, synthetic) is one
uint8 tensor per split on the device. An epoch draws its permutation, crop
offsets and flip mask in one go from the caller's generator (on the
generator's device, moved to the data's device once per epoch), and each batch
is an index_select, a batched crop/flip on uint8 and one fused normalize to
float32: no DataLoader, no workers, no host copies per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from trainers.data._augment import random_crop, random_flip
from trainers.data._base import Batch, Dataset, batch_bounds, check_batch_size


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 NCHW images via histograms.

    A histogram per channel avoids materializing a float copy of the set
    (1.2 GB in float64 for CIFAR), and gives the standard CIFAR statistics.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def default_padding(image_size: int) -> int:
    """The crop padding when none is given: 4 for 32x32 (and 28x28), 1 for 8x8."""
    return max(1, round(image_size / 8))


class TensorDataset(Dataset):
    """Train/validation uint8 images and int64 labels resident on `device`."""

    def __init__(
        self,
        name: str,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        *,
        num_classes: int,
        device: torch.device | str = "cpu",
        augment: bool = False,
        crop_padding: int | None = None,
        flip: bool = True,
        seed: int = 0,
        classes: Sequence[str] | None = None,
    ) -> None:
        train_x, train_y = train
        val_x, val_y = val
        for split, x, y in (("train", train_x, train_y), ("val", val_x, val_y)):
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != x.shape[3]:
                raise ValueError(
                    f"{name} {split} images must be uint8 (N, C, S, S); got {x.dtype} {x.shape}"
                )
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"{name} {split}: {len(x)} images but {len(y)} labels")
            if y.min() < 0 or y.max() >= num_classes:
                raise ValueError(f"{name} {split} labels must be in [0, {num_classes - 1}]")
        if val_x.shape[1:] != train_x.shape[1:]:
            raise ValueError(f"{name}: train and val images differ in shape")
        self.name = name
        self.in_channels = int(train_x.shape[1])
        self.image_size = int(train_x.shape[2])
        self.num_classes = int(num_classes)
        self.num_train = len(train_x)
        self.num_val = len(val_x)
        self.classes = tuple(classes) if classes is not None else None
        self.augment = bool(augment)
        padding = default_padding(self.image_size) if crop_padding is None else crop_padding
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"crop_padding must be an integer >= 0; got {crop_padding!r}")
        self.crop_padding = padding if self.augment else 0
        self.flip = bool(flip) and self.augment
        self.seed = seed
        cpu_train_x = torch.from_numpy(np.ascontiguousarray(train_x))
        self.mean, self.std = channel_stats(cpu_train_x)

        device = torch.device(device)
        self.train_x = cpu_train_x.to(device)
        self.train_y = torch.from_numpy(train_y.astype(np.int64)).to(device)
        self.val_x = torch.from_numpy(np.ascontiguousarray(val_x)).to(device)
        self.val_y = torch.from_numpy(val_y.astype(np.int64)).to(device)
        self.device = self.train_x.device
        shape = (1, self.in_channels, 1, 1)
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(shape)
        self._inv_std = (
            1.0 / torch.tensor(self.std, dtype=torch.float32, device=self.device)
        ).view(shape)
        self._generator = torch.Generator().manual_seed(seed)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> float32 (x - mean) / std, on the data's device."""
        return images.to(torch.float32, copy=True).sub_(self._mean).mul_(self._inv_std)

    def train_batches(
        self, batch_size: int, generator: torch.Generator | None = None, *, drop_last: bool = True
    ) -> Iterator[Batch]:
        bounds = batch_bounds(self.num_train, batch_size, drop_last)
        gen = self._generator if generator is None else generator
        n, where = self.num_train, gen.device
        perm = torch.randperm(n, generator=gen, device=where).to(self.device)
        offsets = flips = None
        if self.crop_padding:
            span = 2 * self.crop_padding + 1
            offsets = torch.randint(0, span, (n, 2), generator=gen, device=where).to(self.device)
        if self.flip:
            flips = (torch.rand(n, generator=gen, device=where) < 0.5).to(self.device)
        return self._iterate(bounds, perm, offsets, flips)

    def _iterate(
        self,
        bounds: list[tuple[int, int]],
        perm: torch.Tensor,
        offsets: torch.Tensor | None,
        flips: torch.Tensor | None,
    ) -> Iterator[Batch]:
        for start, stop in bounds:
            index = perm[start:stop]
            images = self.train_x.index_select(0, index)
            if offsets is not None:
                images = random_crop(images, offsets[start:stop], self.crop_padding)
            if flips is not None:
                images = random_flip(images, flips[start:stop])
            yield self.normalize(images), self.train_y.index_select(0, index)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        check_batch_size(batch_size)
        return self._iterate_val(batch_size)

    def _iterate_val(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.num_val, batch_size):
            stop = start + batch_size
            yield self.normalize(self.val_x[start:stop]), self.val_y[start:stop]
