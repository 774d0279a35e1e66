"""ImageNet (or any ImageFolder pair) streamed from disk through DataLoader workers.

ImageNet does not fit in memory, so this is the one dataset that decodes
JPEGs in worker processes. Workers do the standard geometric transforms
(RandomResizedCrop + flip for training, Resize + CenterCrop for validation)
and return uint8 tensors; the batch is moved to the device (pinned,
non-blocking on CUDA) and normalized there, which moves 4x fewer bytes than
float batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from torchvision import datasets, transforms

from trainers.data._base import Batch, Dataset, check_batch_size, seed_from
from trainers.data._errors import DatasetNotFoundError

IMAGENET_MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))

_HOW_TO_GET = (
    "ImageNet cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org, "
    "extract the train and val archives there and sort val into one folder per class "
    "(e.g. with the widely used valprep.sh)"
)


def _image_folder(root: Path, split: str, transform: transforms.Compose) -> datasets.ImageFolder:
    folder = root / split
    where = f"expected ImageFolder trees {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG"
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"ImageNet not found: no folder {folder}; {where}; {_HOW_TO_GET}", folder
        )
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as exc:  # no class folders, or no images in them
        reason = " ".join(str(exc).split())
        raise DatasetNotFoundError(
            f"ImageNet not found in {folder}: {reason}; {where}; {_HOW_TO_GET}", folder
        ) from exc


class ImageFolderDataset(Dataset):
    """train/ and val/ ImageFolder trees under `root`, delivered as normalized device batches."""

    def __init__(
        self,
        root: Path,
        *,
        name: str = "imagenet",
        device: torch.device | str = "cpu",
        augment: bool = True,
        image_size: int = 224,
        resize_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
    ) -> None:
        for label, value in (("image_size", image_size), ("resize_size", resize_size)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{label} must be a positive integer; got {value!r}")
        if resize_size is None:
            resize_size = round(image_size * 256 / 224)
        if num_workers is None:
            num_workers = min(8, os.cpu_count() or 1)
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0; got {num_workers!r}")
        evaluation = transforms.Compose(
            [
                transforms.Resize(resize_size),
                transforms.CenterCrop(image_size),
                transforms.PILToTensor(),
            ]
        )
        training = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.PILToTensor(),
            ]
        )
        self.train_set = _image_folder(root, "train", training if augment else evaluation)
        self.val_set = _image_folder(root, "val", evaluation)
        if self.train_set.classes != self.val_set.classes:
            raise ValueError(
                f"{root}/train and {root}/val have different class folders "
                f"({len(self.train_set.classes)} vs {len(self.val_set.classes)})"
            )
        self.name = name
        self.root = root
        self.classes = tuple(self.train_set.classes)
        self.in_channels = 3
        self.image_size = image_size
        self.num_classes = len(self.classes)
        self.num_train = len(self.train_set)
        self.num_val = len(self.val_set)
        self.augment = bool(augment)
        self.num_workers = num_workers
        self.seed = seed
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.device = torch.empty(0, device=device).device
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(self.std, device=self.device)).view(1, 3, 1, 1)
        self._generator = torch.Generator().manual_seed(seed)

    def _loader(
        self,
        dataset: datasets.ImageFolder,
        batch_size: int,
        drop_last: bool,
        seed: int | None,
    ) -> DataLoader:
        """Workers are seeded from the loader's generator, so a seed fixes the augmentation too
        (when num_workers > 0; with 0 workers the transforms use the process's global RNG)."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        sampler = (
            SequentialSampler(dataset)
            if seed is None
            else RandomSampler(dataset, generator=generator)
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            generator=generator,
            persistent_workers=False,
        )

    def _to_device(self, loader: DataLoader) -> Iterator[Batch]:
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield images.to(torch.float32, copy=True).sub_(self._mean).mul_(self._inv_std), labels

    def train_batches(
        self, batch_size: int, generator: torch.Generator | None = None, *, drop_last: bool = True
    ) -> Iterator[Batch]:
        check_batch_size(batch_size)
        gen = self._generator if generator is None else generator
        drop = drop_last and self.num_train >= batch_size
        return self._to_device(self._loader(self.train_set, batch_size, drop, seed_from(gen)))

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        check_batch_size(batch_size)
        return self._to_device(self._loader(self.val_set, batch_size, False, None))
