"""The in-memory datasets: digits, mnist5k, synthetic; fixed splits, batches, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.data import DATASET_NAMES, load_dataset


def _epoch(dataset, batch_size, seed, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return list(dataset.train_batches(batch_size, generator, **kwargs))


def test_digits_shapes_and_stratified_split():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    data = load_dataset("digits")
    assert (data.name, data.in_channels, data.image_size, data.num_classes) == ("digits", 1, 8, 10)
    expected_val = np.round(0.1 * np.bincount(labels)).astype(int)
    assert data.num_train + data.num_val == len(labels) == 1797
    assert torch.bincount(data.val_y, minlength=10).tolist() == expected_val.tolist()
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (data.num_train, 1, 8, 8)
    assert data.device == torch.device("cpu") and data.augment is False
    x, y = next(iter(data.val_batches(64)))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_digits_arrays_are_load_digits_without_importing_sklearn():
    """The CSV read directly is scikit-learn's digits, image for image, and reading it
    leaves scikit-learn unimported (a fresh worker saves its 1-3 s import)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from trainers.data._bundled import digits_arrays

    images, labels = digits_arrays()
    reference = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0].astype(np.float64), reference.images)
    assert np.array_equal(labels, reference.target) and labels.dtype == np.int64
    probe = (
        "import sys; from trainers.data._bundled import digits_arrays; digits_arrays(); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mnist5k_shapes_and_split_sizes():
    data = load_dataset("mnist5k", val_fraction=0.2)
    assert (data.in_channels, data.image_size, data.num_classes) == (1, 28, 10)
    assert (data.num_train, data.num_val) == (4000, 1000)  # 500 per class in the bundle
    assert torch.bincount(data.val_y).tolist() == [100] * 10
    assert data.train_x.max().item() == 255


def test_split_is_fixed_whatever_the_trial_seed():
    first = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=123)
    assert torch.equal(first.val_x, other.val_x) and torch.equal(first.val_y, other.val_y)
    assert torch.equal(first.train_x, other.train_x)
    resplit = load_dataset("digits", seed=0, split_seed=1)  # the split has its own knob
    assert not torch.equal(first.val_x, resplit.val_x)
    # train and validation never share an image's slot: together they are the whole set
    assert first.num_train + first.num_val == 1797


def test_train_epoch_covers_the_train_split_normalized():
    data = load_dataset("digits")
    batches = _epoch(data, 100, seed=0, drop_last=False)
    assert [len(y) for _, y in batches] == [100] * 16 + [18]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(torch.sort(y).values, torch.sort(data.train_y).values)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    raw = torch.round(x * data.std[0] + data.mean[0]).to(torch.uint8)
    assert torch.equal(torch.sort(raw.flatten()).values, torch.sort(data.train_x.flatten()).values)


def test_drop_last_keeps_full_batches_only():
    data = load_dataset("digits")
    sizes = [len(y) for _, y in _epoch(data, 100, seed=0)]
    assert sizes == [100] * 16 and data.steps_per_epoch(100) == 16
    assert data.steps_per_epoch(100, drop_last=False) == 17
    assert [len(y) for _, y in _epoch(data, 5000, seed=0)] == [data.num_train]  # one short batch
    with pytest.raises(ValueError, match="batch_size"):
        data.train_batches(0)


def test_val_batches_are_ordered_and_complete():
    data = load_dataset("digits")
    batches = list(data.val_batches(50))
    assert [len(y) for _, y in batches] == [50, 50, 50, data.num_val - 150]
    assert torch.equal(torch.cat([y for _, y in batches]), data.val_y)
    assert torch.equal(torch.cat([x for x, _ in batches]), data.normalize(data.val_x))


def test_same_seed_same_batches_other_seed_other_order():
    data = load_dataset("synthetic", shape=(3, 32, 32), num_train=96, num_val=8, seed=5)
    assert data.augment is True  # 32x32 sets augment by default
    first, again = _epoch(data, 32, seed=7), _epoch(data, 32, seed=7)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = _epoch(data, 32, seed=8)
    assert not torch.equal(first[0][0], other[0][0])
    # without a generator the dataset's own one advances: two epochs differ
    assert not torch.equal(next(data.train_batches(32))[0], next(data.train_batches(32))[0])


def test_synthetic_shapes_seeding_and_options():
    data = load_dataset(
        "synthetic", shape=(1, 12, 12), num_classes=4, num_train=40, num_val=10, seed=1
    )
    assert (data.in_channels, data.image_size, data.num_classes) == (1, 12, 4)
    assert (data.num_train, data.num_val, data.augment) == (40, 10, False)
    x, y = next(data.train_batches(16, torch.Generator().manual_seed(0)))
    assert x.shape == (16, 1, 12, 12) and int(y.max()) < 4
    same = load_dataset(
        "synthetic", shape=(1, 12, 12), num_classes=4, num_train=40, num_val=10, seed=1
    )
    other = load_dataset(
        "synthetic", shape=(1, 12, 12), num_classes=4, num_train=40, num_val=10, seed=2
    )
    assert torch.equal(data.train_x, same.train_x) and not torch.equal(data.train_x, other.train_x)
    # learnable: images of one class are closer to each other than to other classes
    flat = data.train_x.float().flatten(1)
    centroids = torch.stack([flat[data.train_y == c].mean(0) for c in range(4)])
    nearest = torch.cdist(flat, centroids).argmin(1)
    assert (nearest == data.train_y).float().mean() > 0.9
    with pytest.raises(ValueError, match="shape"):
        load_dataset("synthetic", shape=(3, 32, 16))


def test_bad_names_and_options_are_value_errors():
    with pytest.raises(ValueError) as info:
        load_dataset("cifar")
    assert all(name in str(info.value) for name in DATASET_NAMES)
    with pytest.raises(ValueError, match="does not take option.*shape"):
        load_dataset("digits", shape=(1, 8, 8))
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)
    with pytest.raises(ValueError, match="device"):
        load_dataset("digits", device="gpu0")
