"""ImageNet-style ImageFolder trees written as tiny PNG/JPEG files and streamed in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.data import DatasetNotFoundError, load_dataset

COLOURS = {"n001": (255, 0, 0), "n002": (0, 0, 255)}


def write_tree(root: Path, per_class: dict[str, int], noise: bool = False) -> None:
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for index, (wnid, colour) in enumerate(COLOURS.items()):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                size = (20 + 3 * i, 14 + 2 * index)
                if noise:
                    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                    image = Image.fromarray(pixels)
                else:
                    image = Image.new("RGB", size, colour)
                suffix = "JPEG" if index == 1 and noise else "png"
                image.save(folder / f"{wnid}_{i}.{suffix}")


def test_val_batches_are_resized_center_crops_normalized_on_device(tmp_path):
    write_tree(tmp_path, {"train": 3, "val": 2})
    data = load_dataset("imagenet", data_dir=tmp_path, image_size=8, num_workers=0)
    assert (data.in_channels, data.image_size, data.num_classes) == (3, 8, 2)
    assert (data.num_train, data.num_val, data.classes) == (6, 4, ("n001", "n002"))
    batches = list(data.val_batches(3))
    assert [tuple(x.shape) for x, _ in batches] == [(3, 3, 8, 8), (1, 3, 8, 8)]
    assert torch.cat([y for _, y in batches]).tolist() == [0, 0, 1, 1]
    x = batches[0][0]
    assert x.dtype == torch.float32 and batches[0][1].dtype == torch.int64
    red = (torch.tensor([255.0, 0.0, 0.0]) - torch.tensor(data.mean)) / torch.tensor(data.std)
    torch.testing.assert_close(x[0].mean(dim=(1, 2)), red)


def test_train_batches_shuffle_and_drop_the_partial_batch(tmp_path):
    write_tree(tmp_path, {"train": 3, "val": 1})
    data = load_dataset("imagenet", data_dir=tmp_path, image_size=8, num_workers=0)
    assert data.augment is True
    batches = list(data.train_batches(4, torch.Generator().manual_seed(0)))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 8, 8)]
    assert data.steps_per_epoch(4) == 1
    every = list(data.train_batches(4, torch.Generator().manual_seed(0), drop_last=False))
    assert sorted(torch.cat([y for _, y in every]).tolist()) == [0, 0, 0, 1, 1, 1]


def test_workers_reproduce_augmented_batches_from_the_generator(tmp_path):
    write_tree(tmp_path, {"train": 4, "val": 1}, noise=True)
    data = load_dataset("imagenet", data_dir=tmp_path, image_size=8, resize_size=10, num_workers=2)

    def epoch(seed: int) -> list[torch.Tensor]:
        return [x for x, _ in data.train_batches(4, torch.Generator().manual_seed(seed))]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_missing_imagenet_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("imagenet", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train") in message and "image-net.org" in message
    assert "\n" not in message
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetNotFoundError, match="cannot fetch"):
        load_dataset("imagenet", data_dir=tmp_path / "elsewhere", download=True)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "train")):
        load_dataset("imagenet", data_dir=tmp_path)  # train/ exists but holds no classes
