"""CIFAR-10/100 read from tiny files written in the archives' real pickle format."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from trainers.data import DatasetNotFoundError, load_dataset

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _dump(path: Path, entry: dict) -> None:
    with path.open("wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar10(root: Path, per_batch: int = 2, test: int = 3, seed: int = 0) -> dict:
    """A cifar-10-batches-py folder with `per_batch` images per train batch; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": [], "train_labels": [], "test": None, "test_labels": None}
    for index, name in enumerate([*CIFAR10_TRAIN, "test_batch"]):
        count = test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, count)]
        _dump(
            folder / name,
            {
                b"batch_label": f"batch {index}".encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img{index}_{i}.png".encode() for i in range(count)],
            },
        )
        if name == "test_batch":
            written["test"], written["test_labels"] = data, labels
        else:
            written["train"].append(data)
            written["train_labels"] += labels
    names = [
        n.encode() for n in ("airplane automobile bird cat deer dog frog horse ship truck").split()
    ]
    _dump(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072},
    )
    written["train"] = np.concatenate(written["train"])
    return written


def write_cifar100(root: Path, train: int = 6, test: int = 4) -> dict:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name, count in (("train", train), ("test", test)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, count)]
        _dump(
            folder / name,
            {
                b"filenames": [b"x.png"] * count,
                b"batch_label": name.encode(),
                b"fine_labels": fine,
                b"coarse_labels": [f // 5 for f in fine],
                b"data": data,
            },
        )
        written[name], written[f"{name}_labels"] = data, fine
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)],
        },
    )
    return written


def test_cifar10_loads_the_pickled_batches_in_order(tmp_path):
    written = write_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert (data.in_channels, data.image_size, data.num_classes) == (3, 32, 10)
    assert (data.num_train, data.num_val) == (10, 3)  # the test batch is the validation set
    assert data.train_x.shape == (10, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    # rows are 1024 red, then 1024 green, then 1024 blue values, row-major
    assert data.train_x[3, 1, 5, 7].item() == written["train"][3, 1024 + 32 * 5 + 7]
    assert np.array_equal(data.train_x.numpy().reshape(10, -1), written["train"])
    assert data.train_y.tolist() == written["train_labels"]
    assert data.val_y.tolist() == written["test_labels"]
    assert data.augment is True and data.crop_padding == 4 and data.flip is True
    x, y = next(data.train_batches(4, torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    val = torch.cat([x for x, _ in data.val_batches(2)])
    raw = torch.from_numpy(written["test"].reshape(3, 3, 32, 32)).float()
    expected = (raw - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(val, expected)


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    data = load_dataset("cifar100", data_dir=tmp_path, augment=False)
    assert (data.num_classes, data.num_train, data.num_val) == (100, 6, 4)
    assert data.train_y.tolist() == written["train_labels"]
    assert data.classes[42] == "c42" and data.augment is False


def test_data_dir_may_be_the_extracted_folder_or_come_from_the_environment(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    assert load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py").num_train == 10
    monkeypatch.setenv("INSGD_DATA_DIR", str(tmp_path))
    assert load_dataset("cifar10").num_val == 3


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("must not download without download=True")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_download)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "--download" in message and "cifar-10-python.tar.gz" in message
    assert info.value.path == tmp_path / "cifar-10-batches-py"

    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_1" not in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100", data_dir=tmp_path)


def test_corrupt_batch_is_a_value_error_naming_the_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_2"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_download_goes_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = load_dataset("cifar10", data_dir=tmp_path / "new", download=True)
    assert calls == [(str(tmp_path / "new"), True, True)] and data.num_train == 10
    load_dataset("cifar10", data_dir=tmp_path / "new", download=True)
    assert len(calls) == 1  # present files are never fetched again


def test_failed_download_is_a_dataset_not_found_error(tmp_path, monkeypatch):
    class OfflineCIFAR100:
        def __init__(self, root, train, download):
            raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", OfflineCIFAR100)
    with pytest.raises(DatasetNotFoundError, match="could not download CIFAR-100.*no route"):
        load_dataset("cifar100", data_dir=tmp_path, download=True)
