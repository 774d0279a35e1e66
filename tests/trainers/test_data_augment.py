"""On-device augmentation: crops are real crops of the zero-padded image, flips flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainers.data import crop_at, load_dataset, random_crop, random_flip


def test_crop_at_is_a_slice_of_the_padded_batch():
    images = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 0], [3, 2]])
    out = random_crop(images, offsets, padding=2)
    padded = F.pad(images, (2, 2, 2, 2))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for b, (oy, ox) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], padded[b, :, oy : oy + 6, ox : ox + 6])
    assert torch.equal(out[0, :, :2, :], torch.zeros(3, 2, 6, dtype=torch.uint8))  # black border
    assert torch.equal(crop_at(padded, torch.full((5, 2), 2), 6, 6), images)  # centre = original


def test_random_flip_mirrors_only_where_asked():
    images = torch.arange(2 * 1 * 2 * 3).view(2, 1, 2, 3)
    out = random_flip(images, torch.tensor([True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def _raw(data, x):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return torch.round(x * std + mean).to(torch.uint8)


def test_dataset_crops_are_crops_of_their_source_image():
    data = load_dataset(
        "synthetic",
        shape=(3, 8, 8),
        num_train=24,
        num_val=4,
        num_classes=3,
        augment=True,
        crop_padding=2,
        flip=False,
    )
    assert data.crop_padding == 2 and not data.flip
    padded = F.pad(data.train_x, (2, 2, 2, 2))
    seen_offsets = set()
    for x, y in data.train_batches(8, torch.Generator().manual_seed(0)):
        assert x.shape == (8, 3, 8, 8)
        for image, label in zip(_raw(data, x), y, strict=True):
            matches = {
                (src, oy, ox)
                for src in torch.nonzero(data.train_y == label).flatten().tolist()
                for oy in range(5)
                for ox in range(5)
                if torch.equal(image, padded[src, :, oy : oy + 8, ox : ox + 8])
            }
            assert len(matches) == 1, "each output must be exactly one crop of one source"
            seen_offsets.add(next(iter(matches))[1:])
    assert len(seen_offsets) > 5  # offsets really vary


def test_dataset_flips_are_mirror_images():
    data = load_dataset(
        "synthetic",
        shape=(3, 8, 8),
        num_train=64,
        num_val=4,
        num_classes=64,
        augment=True,
        crop_padding=0,
    )
    flipped = kept = 0
    for x, y in data.train_batches(16, torch.Generator().manual_seed(3)):
        for image, label in zip(_raw(data, x), y, strict=True):
            sources = data.train_x[data.train_y == label]
            if any(torch.equal(image, s) for s in sources):
                kept += 1
            elif any(torch.equal(image, s.flip(-1)) for s in sources):
                flipped += 1
    assert flipped + kept == 64 and flipped > 10 and kept > 10


def test_augment_off_means_original_images():
    data = load_dataset("synthetic", shape=(3, 32, 32), num_train=16, num_val=4, augment=False)
    x, y = next(data.train_batches(16, torch.Generator().manual_seed(0), drop_last=False))
    raw = _raw(data, x)
    for image, label in zip(raw, y, strict=True):
        sources = data.train_x[data.train_y == label]
        assert any(torch.equal(image, s) for s in sources)
